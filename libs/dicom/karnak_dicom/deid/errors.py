"""What the de-identification engine raises: a profile that cannot be used, or an instance it refuses."""

from __future__ import annotations

from karnak_dicom.errors import ConfigError, KarnakError


class ProfileError(ConfigError):
    """A de-identification profile is invalid; each problem names the element (index and name) and the field."""


class InstanceExcluded(KarnakError):
    """The profile refuses this instance for this destination; ``reason`` says why, without patient data."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NoPixelMask(InstanceExcluded):
    """The instance needs its pixel data cleaned but the profile has no mask for it: it is never sent uncleaned."""
