"""What the receiver checks before it answers a C-STORE: the dataset's identity, read from its first elements.

An instance without Study or Series Instance UID cannot be routed, and one whose SOP Class or Instance
UID differs from its C-STORE request is not the instance announced; the processor would park them later,
and the modality, answered Success, would never know. Only the elements up to (0020,000E) are walked,
values skipped: it costs microseconds whatever the pixel data.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom.datadict import dictionary_has_tag
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from karnak_dicom._internals import data_element_generator

# C-STORE statuses (PS3.4 B.2.3): the dataset does not match what the request says; cannot understand.
STATUS_DATASET_DOES_NOT_MATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000

SOP_CLASS_UID = Tag(0x0008, 0x0016)
SOP_INSTANCE_UID = Tag(0x0008, 0x0018)
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
SERIES_INSTANCE_UID = Tag(0x0020, 0x000E)
_WANTED = {
    SOP_CLASS_UID: "SOPClassUID",
    SOP_INSTANCE_UID: "SOPInstanceUID",
    STUDY_INSTANCE_UID: "StudyInstanceUID",
    SERIES_INSTANCE_UID: "SeriesInstanceUID",
}
# Values longer than this are not read (a UID is at most 64 bytes).
_DEFER_BYTES = 256


@dataclass(frozen=True)
class Refusal:
    """A C-STORE answered with an error: its status and the reason (sent as the Error Comment, logged)."""

    status: int
    reason: str  # short enough for the Error Comment (LO: at most 64 characters)
    detail: str = ""  # for the log: the UIDs that differ

    @property
    def error_comment(self) -> str:
        return self.reason[:64]


def _uid(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").rstrip("\x00 ")
    return ""


def _printable(uid: str) -> str:
    return "".join(c if c in "0123456789." else "?" for c in uid[:64])


def check_dataset(dataset: bytes, transfer_syntax: str, sop_class_uid: str, sop_instance_uid: str) -> Refusal | None:
    """Why a C-STORE with this dataset must be refused, or None when its identity is what the request says."""
    syntax = UID(transfer_syntax)
    if syntax.is_deflated or not syntax.is_transfer_syntax:
        return None  # reading a deflated header means inflating it: left to the processor
    found: dict[BaseTag, str] = {}
    stopped_at: list[BaseTag] = []

    def past_series(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag > SERIES_INSTANCE_UID:
            stopped_at.append(tag)
            return True
        return False

    stream = BytesIO(dataset)
    previous = -1
    try:
        elements = data_element_generator(
            stream, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=past_series, defer_size=_DEFER_BYTES
        )
        for element in elements:
            if element.tag <= previous:
                raise ValueError("elements out of order")
            previous = element.tag
            if isinstance(element, RawDataElement) and element.tag in _WANTED:
                found[element.tag] = _uid(element.value)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed header
        return Refusal(STATUS_CANNOT_UNDERSTAND, f"unreadable dataset header ({type(exc).__name__})")
    # "Lacks" is said only of a header walked to its end or to a real element past the Series UID: a
    # length that is off sends the walk astray, and what it then reads as tags proves nothing.
    sane_stop = (
        stream.tell() == len(dataset)
        if not stopped_at
        else stopped_at[0].is_private or dictionary_has_tag(stopped_at[0])
    )
    if not sane_stop:
        return Refusal(STATUS_CANNOT_UNDERSTAND, "unreadable dataset header (an element's length is wrong)")
    missing = [name for tag, name in _WANTED.items() if not found.get(tag)]
    if missing:
        return Refusal(STATUS_DATASET_DOES_NOT_MATCH, f"dataset lacks {', '.join(missing)}")
    for tag, announced in ((SOP_CLASS_UID, sop_class_uid), (SOP_INSTANCE_UID, sop_instance_uid)):
        if found[tag] != announced.rstrip("\x00 "):
            return Refusal(
                STATUS_DATASET_DOES_NOT_MATCH,
                f"dataset {_WANTED[tag]} differs from the C-STORE request",
                f"{_printable(found[tag])} in the dataset, {_printable(announced)} in the request",
            )
    return None
