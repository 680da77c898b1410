"""An attribute's value as Karnak compares it: one definition for conditions, expressions and pseudonyms.

Karnak reads values with dcm4che's ``getString``, which follows PS3.5 6.2: the text of every value, joined
with ``\\``, without the padding DICOM adds to reach an even length (trailing spaces and NULs), and without
leading spaces where the standard says they are not significant (every string VR but ST, LT, UT and UR;
unknown-VR bytes are kept as they are but for their padding). Letters keep their case; a sequence has no
text. Conditions (``tagValueContains``...), the expression language's ``getString``, API templates, the
pseudonym sources and the engine's date shift all read values with `attribute_text`, so the same attribute
compares, hashes and renders the same way everywhere (before, conditions and the engine kept a PatientID's
leading space that the pseudonym sources trimmed: one patient, two keys).
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue

__all__ = ["attribute_text", "text_values"]

_PADDING = "\x00 "
# PS3.5 6.2: leading spaces are significant in these (and in bytes of an unknown VR), in no other text VR.
_LEADING_SPACES_KEPT = frozenset({"ST", "LT", "UT", "UR", "UN", "OB", "OW", "OD", "OF", "OL", "OV"})


def _decoded(value: bytes | bytearray) -> str:
    # Private tags read without their dictionary arrive as UN bytes; decoding them lets a condition match
    # their text. Latin-1 never fails.
    return bytes(value).decode("latin-1").rstrip(_PADDING)


def text_values(value: Any) -> list[str]:
    """The values of a decoded attribute as text, one per value (bytes as Latin-1, padding dropped)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.rstrip(_PADDING)
        return [text] if text else []
    if isinstance(value, bytes | bytearray):
        text = _decoded(value)
        return [text] if text else []
    if isinstance(value, MultiValue | list | tuple):  # a raw list can be set with validation turned off
        return [_decoded(item) if isinstance(item, bytes | bytearray) else str(item).rstrip(_PADDING) for item in value]
    return [str(value)]


def attribute_text(dataset: Dataset, tag: int) -> str | None:
    """The top-level attribute's text (values joined with ``\\``); "" when empty; None when absent or a sequence."""
    if tag not in dataset:
        return None
    element: Any = dataset[tag]
    if element.VR == "SQ":
        # dcm4che has no string for a sequence either, so Karnak's value functions are false on one.
        return None
    values = text_values(element.value)
    if element.VR not in _LEADING_SPACES_KEPT:
        values = [value.lstrip(" ") for value in values]
    return "\\".join(values)
