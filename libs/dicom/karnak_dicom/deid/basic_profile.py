"""The Basic Application Level Confidentiality Profile: PS3.15 Table E.1-1, shipped as package data.

Only the ``basicProfile`` column is used, as in Karnak. Compound codes keep the attribute present with a
non-identifying value, so the instance stays valid whatever its IOD: X/Z and Z/D give Z, X/D and X/Z/D give
D (a dummy of the VR), X/Z/U* gives U. The row for private attributes (odd groups) removes them; the three
repeating-group rows are tag patterns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

from karnak_dicom.deid.actions import DUMMY, EMPTY, KEEP, REMOVE, UID, Action
from karnak_dicom.tags import parse_tag_pattern

__all__ = ["BasicProfileTable", "basic_profile_table", "load_table_rows", "resolve_code"]

_CODES: Final[dict[str, Action]] = {
    "X": REMOVE,
    "Z": EMPTY,
    "D": DUMMY,
    "U": UID,
    "K": KEEP,
    "X/Z": EMPTY,
    "Z/D": EMPTY,
    "X/D": DUMMY,
    "X/Z/D": DUMMY,
    "X/Z/U": UID,
    "X/Z/U*": UID,
}
_PRIVATE_ROW: Final = "(GGGG,EEEE) WHERE GGGG IS ODD"


def resolve_code(code: str) -> Action:
    """The action for a basic-profile code, compound codes resolved; raises KeyError for an unknown code."""
    return _CODES[code]


@dataclass(frozen=True)
class BasicProfileTable:
    """Table E.1-1 as lookups: exact tags, group patterns, and the action for private attributes."""

    exact: dict[int, Action]
    patterns: tuple[tuple[int, int, Action], ...]
    private: Action

    def action_for(self, tag: int) -> Action | None:
        """The basic profile's action for ``tag``, or None when the table does not list it."""
        action = self.exact.get(tag)
        if action is not None:
            return action
        for value, mask, pattern_action in self.patterns:
            if tag & mask == value:
                return pattern_action
        if tag & 0x10000:
            return self.private
        return None


def load_table_rows() -> list[dict[str, Any]]:
    """The rows of Table E.1-1 from the package data, as the JSON has them."""
    text = resources.files("karnak_dicom").joinpath("data/confidentiality_profile_attributes.json").read_text()
    rows: list[dict[str, Any]] = json.loads(text)
    return rows


@cache
def basic_profile_table() -> BasicProfileTable:
    """The table, read once per process."""
    exact: dict[int, Action] = {}
    patterns: list[tuple[int, int, Action]] = []
    private = REMOVE
    for row in load_table_rows():
        action = resolve_code(row["basicProfile"])
        if row["tag"] == _PRIVATE_ROW:
            private = action
            continue
        pattern = parse_tag_pattern(row["tag"])
        if pattern.is_exact:
            exact[pattern.value] = action
        else:
            patterns.append((pattern.value, pattern.mask, action))
    return BasicProfileTable(exact, tuple(patterns), private)
