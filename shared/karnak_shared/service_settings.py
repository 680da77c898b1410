"""A service's own settings: the configuration's section for it (when there is one) under the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from karnak_shared.errors import ConfigError

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def load_service_settings(
    model: type[SettingsT], section: str, env_prefix: str, config: Any, environ: Mapping[str, str] | None = None
) -> SettingsT:
    """Validate `model` from `config.<section>` overridden by `<env_prefix><FIELD>` variables.

    Raises `ConfigError` naming the setting and the variable it came from.
    """
    environ = os.environ if environ is None else environ
    found = getattr(config, section, None)
    values: dict[str, Any] = found.model_dump() if isinstance(found, BaseModel) else {}
    origin: dict[str, str] = {}
    for name in model.model_fields:
        variable = env_prefix + name.upper()
        if variable in environ:
            values[name] = environ[variable]
            origin[name] = variable
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else section
            source = f" (from {origin[name]})" if name in origin else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{section}.{name}{source}: {message[:1].lower() + message[1:]}")
        raise ConfigError(problems) from None
