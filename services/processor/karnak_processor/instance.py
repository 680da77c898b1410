"""Reading what routing needs from an instance's Part 10 bytes, without decoding its pixel data."""

from __future__ import annotations

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
        """Study-level values for notification emails (never logged)."""
        values: dict[str, str] = {}
        for keyword in DISPLAY_KEYWORDS:
            value = self.dataset.get(keyword)
            if value is not None:
                values[keyword] = str(value)
        return values


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
    for element in data_element_generator(stream, syntax.is_implicit_VR, syntax.is_little_endian, defer_size=1):
        if not isinstance(element, RawDataElement):
            continue
        if element.length != _UNDEFINED_LENGTH and element.value_tell + element.length > total:
            raise InvalidInstance(
                f"truncated instance: element {element.tag} declares {element.length} bytes but only "
                f"{max(total - element.value_tell, 0)} follow"
            )


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
        raise InvalidInstance(f"malformed DICOM dataset: {type(exc).__name__}: {exc}"[:500]) from None
    missing = [keyword for keyword, value in identifiers.items() if not value]
    if missing:
        raise InvalidInstance(f"instance lacks required attributes: {', '.join(missing)}")
    return Instance(
        part10=part10,
        dataset=dataset,
        sop_class_uid=identifiers["SOPClassUID"],
        sop_instance_uid=identifiers["SOPInstanceUID"],
        study_instance_uid=identifiers["StudyInstanceUID"],
        series_instance_uid=identifiers["SeriesInstanceUID"],
        transfer_syntax=transfer_syntax,
    )
