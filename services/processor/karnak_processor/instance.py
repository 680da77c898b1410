"""Reading what routing needs from an instance's Part 10 bytes, without decoding its pixel data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator

from karnak_shared.envelope import DISPLAY_KEYWORDS
from karnak_shared.errors import InvalidInstance


@dataclass(frozen=True)
class Instance:
    """An instance as received: its bytes, and its attributes up to (not including) the pixel data."""

    part10: bytes
    dataset: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str

    def display_values(self) -> dict[str, str]:
        """Study-level values for notification emails (never logged); an unreadable one is left out."""
        values: dict[str, str] = {}
        for keyword in DISPLAY_KEYWORDS:
            try:
                value = self.dataset.get(keyword)
            except Exception:  # noqa: BLE001 - a malformed element (wrong length for its VR, unknown VR)
                continue
            if value is not None:
                values[keyword] = str(value)
        return values


# Quoted text and byte strings in a library's error message: pydicom quotes the offending value, which may
# be a patient's name or birth date, and reasons end up in logs, parked messages and emails.
_QUOTED = re.compile(r"b?'(?:[^'\\\n]|\\.)*'" + "|" + r'b?"(?:[^"\\\n]|\\.)*"')


def hide_quoted(text: str) -> str:
    """`text` with every quoted string and byte string replaced by '***'."""
    return _QUOTED.sub("'***'", text)


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """`Type: message` of an exception raised while reading an instance, with quoted values hidden."""
    return f"{type(exc).__name__}: {hide_quoted(str(exc))}"[:limit]


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _check_complete(part10: bytes, dataset: Dataset) -> None:
    """Raise `InvalidInstance` when an element's declared length runs past the bytes received.

    pydicom returns a short value for a cut element without complaint, and the pixel data is not read
    here at all, so the element headers are walked (values skipped, not read) and checked against the end.
    """
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_deflated or "FileMetaInformationGroupLength" not in dataset.file_meta:
        return
    stream = BytesIO(part10)
    stream.seek(132 + 12 + int(dataset.file_meta.FileMetaInformationGroupLength))
    total = len(part10)
    end = stream.tell()
    for element in data_element_generator(stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=1):
        if isinstance(element, RawDataElement):
            if element.length != _UNDEFINED_LENGTH and element.value_tell + element.length > total:
                raise InvalidInstance(
                    f"truncated instance: element {element.tag} declares {element.length} bytes but only "
                    f"{max(total - element.value_tell, 0)} follow"
                )
        end = stream.tell()
    if end < total:
        # pydicom stops without a word at a header cut short: the instance ended inside an element's header.
        raise InvalidInstance(f"truncated instance: it ends with {total - end} bytes of an incomplete element header")


def _check_identity(dataset: Dataset, identifiers: dict[str, str]) -> None:
    """Raise `InvalidInstance` when the dataset is not the instance its C-STORE announced.

    The receiver writes the file meta from the C-STORE request (Affected SOP Class and Instance UIDs).
    A dataset that says otherwise would be routed as one SOP class and offered to the destination as
    another (PS3.4 has a status for it, 0xA900 "Data Set does not match SOP Class").
    """
    meta = dataset.file_meta
    for keyword, meta_keyword in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        announced = str(meta.get(meta_keyword, "") or "").rstrip("\x00 ")
        if announced and announced != identifiers[keyword].rstrip("\x00 "):
            found = re.sub(r"[^0-9.]", "?", identifiers[keyword][:64])
            raise InvalidInstance(f"the dataset's {keyword} {found} differs from the C-STORE's {announced}")


def read_instance(part10: bytes) -> Instance:
    """Parse an instance's header; raise `InvalidInstance` saying what is wrong with it."""
    try:
        dataset = dcmread(BytesIO(part10), stop_before_pixels=True)
        _check_complete(part10, dataset)
        # Element values are read lazily: touch the ones routing uses so a malformed value fails here.
        identifiers = {
            keyword: str(dataset.get(keyword, "") or "")
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        }
        transfer_syntax = str(dataset.file_meta.TransferSyntaxUID)
    except InvalidInstance:
        raise
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 instance: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on malformed input
        raise InvalidInstance(f"malformed DICOM dataset: {describe_error(exc)}") from None
    missing = [keyword for keyword, value in identifiers.items() if not value]
    if missing:
        raise InvalidInstance(f"instance lacks required attributes: {', '.join(missing)}")
    _check_identity(dataset, identifiers)
    return Instance(
        part10=part10,
        dataset=dataset,
        sop_class_uid=identifiers["SOPClassUID"],
        sop_instance_uid=identifiers["SOPInstanceUID"],
        study_instance_uid=identifiers["StudyInstanceUID"],
        series_instance_uid=identifiers["SeriesInstanceUID"],
        transfer_syntax=transfer_syntax,
    )
