"""The stow-sender's own settings: batching, timeouts and TLS.

They belong in a ``stow_sender:`` section of the gateway's configuration file. Until the shared
configuration model has that section, they come from the environment (``KARNAK_STOW_SENDER_<FIELD>``, e.g.
``KARNAK_STOW_SENDER_BATCH_SIZE=20``) over the defaults below; once it has one, its values are the base
and the environment still overrides them, so a deployment can tune one replica without editing the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from karnak_shared.service_settings import load_service_settings

ENV_PREFIX = "KARNAK_STOW_SENDER_"


class StowSenderSettings(BaseModel):
    """How the stow-sender batches and posts instances."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Instances of one study sent in one request: fewer round trips, and a DICOMweb server stores a
    # batch faster than the same instances one by one.
    batch_size: Annotated[int, Field(ge=1, le=500)] = 20
    # How long a batch waits for more instances of its study before it goes out (seconds).
    max_wait: Annotated[float, Field(ge=0, le=60)] = 0.2
    # Requests in flight per destination: while one batch is posted and settled, the next is formed and sent.
    concurrency: Annotated[int, Field(ge=1, le=16)] = 2
    # A batch stops growing past this many bytes, so large instances do not pile up in memory.
    max_batch_bytes: Annotated[int, Field(ge=1)] = 64 * 1024 * 1024
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    # Between two bytes of the answer; the server stores the whole batch before it answers.
    read_timeout: Annotated[float, Field(gt=0)] = 120.0
    verify_tls: bool = True
    # A PEM file of the certificate authorities to trust instead of the system's (e.g. a hospital CA).
    ca_bundle: str | None = None

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


def load_settings(config: Any, environ: Mapping[str, str] | None = None) -> StowSenderSettings:
    """The settings from the configuration's ``stow_sender`` section (when it has one) and the environment."""
    return load_service_settings(StowSenderSettings, "stow_sender", ENV_PREFIX, config, environ)
