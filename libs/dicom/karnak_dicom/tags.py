"""Tags and tag patterns as profiles write them, and the sets of attributes a profile element covers.

A profile writes a tag as ``(gggg,eeee)``, ``gggg,eeee`` or ``ggggeeee``; an ``X`` (either case) in place of
a hex digit matches any digit there, so ``(0010,XXXX)`` is the whole patient group and ``(XXXX,XXXX)`` every
attribute. A pattern is kept as a (value, mask) pair: a tag matches when ``tag & mask == value``, one AND and
one comparison per pattern, no regular expression per attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pydicom.datadict import keyword_dict

__all__ = ["TagPattern", "TagSelector", "format_tag", "parse_tag_pattern", "parse_tag_reference"]

_HEX_DIGITS: Final = frozenset("0123456789ABCDEF")


@dataclass(frozen=True)
class TagPattern:
    """One entry of a tag list: an exact tag (mask 0xFFFFFFFF) or a pattern with wildcard digits."""

    value: int
    mask: int
    text: str

    @property
    def is_exact(self) -> bool:
        return self.mask == 0xFFFFFFFF

    def matches(self, tag: int) -> bool:
        return tag & self.mask == self.value


def parse_tag_pattern(text: str) -> TagPattern:
    """Parse a tag or tag pattern; raises ValueError with a message meant for the profile's author."""
    cleaned = text.strip().replace("(", "").replace(")", "").replace(",", "").replace(" ", "").upper()
    if len(cleaned) != 8 or not set(cleaned) <= _HEX_DIGITS | {"X"}:
        raise ValueError(f"invalid tag {text!r}: expected (gggg,eeee), gggg,eeee or ggggeeee, X for any digit")
    value = int(cleaned.replace("X", "0"), 16)
    mask = int("".join("0" if char == "X" else "F" for char in cleaned), 16)
    return TagPattern(value, mask, text.strip())


def parse_tag_reference(text: str) -> int:
    """An exact tag given as hex (three spellings) or as a DICOM keyword; raises ValueError."""
    stripped = text.strip()
    if stripped in keyword_dict:
        return int(keyword_dict[stripped])
    pattern = parse_tag_pattern(stripped)
    if not pattern.is_exact:
        raise ValueError(f"invalid tag {text!r}: a single tag is needed here, not a pattern")
    return pattern.value


def format_tag(tag: int) -> str:
    """``(gggg,eeee)`` in upper-case hex, as DICOM prints tags."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class TagSelector:
    """The attributes an element covers: ``tags`` (all attributes when empty) less ``excluded``.

    Excluded entries win over included ones. Exact tags are looked up in a set before any pattern is tried.
    """

    included: tuple[TagPattern, ...] = ()
    excluded: tuple[TagPattern, ...] = ()
    _included_exact: frozenset[int] = field(init=False, repr=False, compare=False)
    _included_patterns: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _excluded_exact: frozenset[int] = field(init=False, repr=False, compare=False)
    _excluded_patterns: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_included_exact", frozenset(p.value for p in self.included if p.is_exact))
        object.__setattr__(
            self, "_included_patterns", tuple((p.value, p.mask) for p in self.included if not p.is_exact)
        )
        object.__setattr__(self, "_excluded_exact", frozenset(p.value for p in self.excluded if p.is_exact))
        object.__setattr__(
            self, "_excluded_patterns", tuple((p.value, p.mask) for p in self.excluded if not p.is_exact)
        )

    @property
    def covers_everything(self) -> bool:
        return not self.included and not self.excluded

    def matches(self, tag: int) -> bool:
        """Whether the element applies to ``tag`` (excluded entries first, then exact tags, then patterns)."""
        if tag in self._excluded_exact:
            return False
        for value, mask in self._excluded_patterns:
            if tag & mask == value:
                return False
        if not self.included:
            return True
        if tag in self._included_exact:
            return True
        return any(tag & mask == value for value, mask in self._included_patterns)
