"""The root of the gateway's exception hierarchy, and the errors of DICOM data and of configurations.

`karnak_shared.errors` builds the rest of the hierarchy (broker, blob store, delivery) on these classes,
so a service catching `KarnakError` or `ConfigError` catches what this library raises.
"""

from __future__ import annotations


class KarnakError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(KarnakError):
    """The configuration is invalid; the message names the field (and the line when known)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class InvalidInstance(KarnakError):
    """The bytes of an instance are not a DICOM dataset the gateway can route."""
