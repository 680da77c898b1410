"""What can happen to one attribute, and how it is written into a pydicom dataset.

An attribute is kept (K), removed (X), emptied (Z), given its UID hash (U), a dummy value of its VR (D
without a value) or a given value (D with a value: ``Replace``, computed dates, API answers).

Values are written as new elements, never by changing an element in place: the engine keeps a shallow
snapshot of the original instance and relies on that to read original values after changing them. Text
that is plain ASCII (UIDs, dates, numbers, dummies, and most replacement values) is stored already encoded,
as a RawDataElement: ASCII is the same bytes in every character set DICOM allows, and pydicom writes raw
elements without decoding and re-encoding them, which is most of the cost of a changed attribute.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from karnak_dicom._internals import Elements
from karnak_dicom.attributes import text_values

__all__ = [
    "DUMMY",
    "EMPTY",
    "KEEP",
    "REMOVE",
    "UID",
    "Action",
    "Elements",
    "code_sequence_bytes",
    "raw_sequence",
    "raw_text",
    "raw_values",
    "replace",
    "set_empty",
    "set_text",
    "set_uid_hashes",
    "text_values",
]


@dataclass(frozen=True, slots=True)
class Action:
    """``kind``: K keep, X remove, Z empty, U UID hash, D dummy of the VR, R replace with ``value``."""

    kind: str
    value: str | None = None

    def __str__(self) -> str:
        return self.kind if self.kind != "R" else f"Replace({self.value!r})"


KEEP: Final = Action("K")
REMOVE: Final = Action("X")
EMPTY: Final = Action("Z")
UID: Final = Action("U")
DUMMY: Final = Action("D")


def replace(value: str | None) -> Action:
    """Replace with ``value``; None empties the attribute (as Karnak's Replace with a null value does)."""
    return EMPTY if value is None else Action("R", value)


TEXT_VRS: Final = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
# VRs whose values are ASCII by definition: their raw bytes can be read without the character set.
ASCII_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
_INT_VRS: Final = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})
_FLOAT_VRS: Final = frozenset({"FL", "FD"})


def _raw(tag: int, vr: str, data: bytes, implicit: bool = False) -> RawDataElement:
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, implicit, True)


def _element(tag: int, vr: str, value: Any) -> DataElement:
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def set_empty(elements: Elements, tag: BaseTag, vr: str) -> None:
    """Give the attribute an empty value, keeping its VR (an empty sequence for SQ)."""
    if vr == "SQ":
        elements[tag] = _element(tag, vr, Sequence())
    elif " or " not in vr:
        elements[tag] = _raw(tag, vr, b"")
    else:
        elements[tag] = _element(tag, vr, empty_value_for_VR(vr))


def raw_values(element: RawDataElement) -> list[str] | None:
    """The values of a raw ASCII attribute (see ASCII_VRS) read from its bytes, None when not available."""
    data = element.value
    if data is None:
        return None  # deferred read: the dataset must load it
    text = data.decode("latin-1").strip("\x00 ")
    return [part.strip("\x00 ") for part in text.split("\\")] if text else []


def _typed(vr: str, parts: list[str]) -> Any:
    """``parts`` in the Python type pydicom expects for ``vr``; raises ValueError when they do not fit it."""
    if vr in _INT_VRS:
        numbers: list[Any] = [int(part) for part in parts]
    elif vr in _FLOAT_VRS:
        numbers = [float(part) for part in parts]
    elif vr in TEXT_VRS or " or " in vr:
        return parts[0] if len(parts) == 1 else parts
    else:  # bytes
        data = "\\".join(parts).encode("latin-1", "replace")
        return data + b"\x00" if len(data) % 2 else data
    return numbers[0] if len(numbers) == 1 else numbers


def set_text(elements: Elements, tag: BaseTag, vr: str, text: str) -> None:
    """Give the attribute the value ``text`` (values separated by ``\\``) in its VR; a value the VR cannot
    hold (letters in a US, say) empties it rather than keep the original."""
    if text == "":
        set_empty(elements, tag, vr)
    elif vr in TEXT_VRS and text.isascii():
        elements[tag] = _raw(tag, vr, text.encode("ascii"))
    else:
        try:
            elements[tag] = _element(tag, vr, _typed(vr, text.split("\\")))
        except (ValueError, TypeError, OverflowError):
            set_empty(elements, tag, vr)


def set_uid_hashes(elements: Elements, tag: BaseTag, values: Iterable[str], hash_uid: Callable[[str], str]) -> None:
    """Replace each value by its UID hash, with VR UI (whatever the VR was, as Karnak does)."""
    hashed = [hash_uid(part) if part else "" for part in (value.strip("\x00 ") for value in values)]
    elements[tag] = _raw(tag, "UI", "\\".join(hashed).encode("ascii"))


def _encoded(tag: int, vr: str, text: str, implicit: bool) -> bytes:
    data = text.encode("ascii", "replace")
    if len(data) % 2:
        data += b" "
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(data)) + data
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(data)) + data


def code_sequence_bytes(codes: Iterable[tuple[str, str]], *, implicit: bool) -> bytes:
    """The items of a code sequence (CodeValue, CodingSchemeDesignator DCM, CodeMeaning), encoded in
    little endian, for a raw SQ element."""
    items = []
    for value, meaning in codes:
        body = (
            _encoded(0x00080100, "SH", value, implicit)
            + _encoded(0x00080102, "SH", "DCM", implicit)
            + _encoded(0x00080104, "LO", meaning, implicit)
        )
        items.append(struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body)
    return b"".join(items)


def raw_sequence(tag: int, data: bytes, *, implicit: bool) -> RawDataElement:
    """A sequence stored encoded (little endian), as pydicom keeps it when it reads a file."""
    return RawDataElement(BaseTag(tag), "SQ", len(data), data, 0, implicit, True)


def raw_text(tag: int, vr: str, text: str) -> RawDataElement | DataElement:
    """An element holding ``text``: raw when it is ASCII, decoded otherwise."""
    if text.isascii():
        return _raw(tag, vr, text.encode("ascii"))
    return _element(tag, vr, text)
