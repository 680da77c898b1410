"""Classifying C-STORE response statuses (DESIGN.md section 8)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    SUCCESS = "success"
    WARNING = "warning"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Stored:
    """A C-STORE the destination accepted: SUCCESS or WARNING, with the status it answered."""

    outcome: Outcome
    status: int

    @property
    def warning(self) -> str | None:
        """What a warning status said (`sent` with this as its reason, DESIGN.md section 16), else None."""
        return f"stored with warning status {describe(self.status)}" if self.outcome is Outcome.WARNING else None


def classify(status: int) -> Outcome:
    """Success 0x0000, warnings 0xB0xx/0x0107/0x0116 (stored), 0xA7xx out of resources (retry later),
    0x0122/0xA9xx/0xC0xx and any other failure permanent (parked, replayable)."""
    if status == 0x0000:
        return Outcome.SUCCESS
    if (status & 0xF000) == 0xB000 or status in (0x0107, 0x0116):
        return Outcome.WARNING
    if (status & 0xFF00) == 0xA700:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def describe(status: int) -> str:
    names = {
        0x0000: "Success",
        0x0122: "SOP Class not supported",
        0x0124: "Not authorized",
        0x0110: "Processing failure",
        0x0211: "Unrecognized operation",
        0xA700: "Out of resources",
        0xA900: "Data set does not match SOP Class",
        0xC000: "Cannot understand",
        0xB000: "Coercion of data elements",
        0xB006: "Elements discarded",
        0xB007: "Data set does not match SOP Class (warning)",
    }
    name = names.get(status)
    if name is None:
        top = status & 0xFF00
        name = {
            0xA700: "Out of resources",
            0xA900: "Data set does not match SOP Class",
            0xC000: "Cannot understand",
        }.get(top & 0xF000 if top & 0xF000 == 0xC000 else top, "Failure")
    return f"0x{status:04X} ({name})"
