"""The kheops-sharer's own settings: HTTP timeouts, TLS, token cache, workers.

They belong in a ``kheops_sharer:`` section of the gateway's configuration file. Until the shared
configuration model has that section, they come from the environment (``KARNAK_KHEOPS_SHARER_<FIELD>``)
over the defaults below; once it has one, its values are the base and the environment overrides them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from karnak_shared.service_settings import load_service_settings

ENV_PREFIX = "KARNAK_KHEOPS_SHARER_"


class KheopsSharerSettings(BaseModel):
    """How the sharer talks to the Kheops API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    read_timeout: Annotated[float, Field(gt=0)] = 30.0
    verify_tls: bool = True
    ca_bundle: str | None = None
    # An introspection result is reused this long (seconds), so a study of many series costs two
    # introspections per album, not two per series.
    token_cache_seconds: Annotated[float, Field(ge=0)] = 300.0
    workers: Annotated[int, Field(ge=1, le=64)] = 4

    @field_validator("ca_bundle")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not Path(value).is_file() or not os.access(value, os.R_OK):
            raise ValueError(f"{value} is not a readable file")
        return value

    @property
    def verify(self) -> bool | str:
        """What `requests` takes as `verify`: the CA bundle, or whether to check certificates at all."""
        if not self.verify_tls:
            return False
        return self.ca_bundle or True


def load_settings(config: Any, environ: Mapping[str, str] | None = None) -> KheopsSharerSettings:
    """The settings from the configuration's ``kheops_sharer`` section (when it has one) and the environment."""
    return load_service_settings(KheopsSharerSettings, "kheops_sharer", ENV_PREFIX, config, environ)
