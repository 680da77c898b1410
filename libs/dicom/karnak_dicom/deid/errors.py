"""What the de-identification engine raises: a profile that cannot be used, or an instance it refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from karnak_dicom.errors import ConfigError, KarnakError


class ProfileError(ConfigError):
    """A de-identification profile is invalid; each problem names the element (index and name) and the field.

    ``located`` holds the same problems as `karnak_dicom.deid.profile.ProfileProblem` objects (element index,
    field, message and line apart) when they come from validating the profile's models.
    """

    def __init__(self, problems: list[str] | str, *, located: Sequence[Any] = ()) -> None:
        super().__init__(problems)
        self.located = tuple(located)


class InstanceExcluded(KarnakError):
    """The profile refuses this instance for this destination; ``reason`` says why, without patient data."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NoPixelMask(InstanceExcluded):
    """The instance needs its pixel data cleaned but the profile has no mask for it: it is never sent uncleaned."""
