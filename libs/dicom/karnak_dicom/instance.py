"""Reading what routing needs from an instance's Part 10 bytes or blob file, without reading its pixel data."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Protocol

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError

from karnak_dicom._internals import data_element_generator
from karnak_dicom.errors import InvalidInstance

# Study-level values shown in notification emails. They are the values as sent (de-identified for a
# de-identifying destination) and are never logged.
DISPLAY_KEYWORDS = ("PatientID", "StudyDescription", "StudyDate", "SeriesDescription")


class ByteSource(Protocol):
    """Bytes kept where no file name reaches them (an object store): read through a seekable stream.

    `open` raises what its store raises for a missing or unreadable object; reads raise `OSError` with
    an errno, as a file's would.
    """

    def open(self) -> BinaryIO: ...


Source = bytes | Path | ByteSource


@dataclass(frozen=True)
class Instance:
    """An instance as received: where its bytes are, and its attributes up to (not including) the pixel data.

    `source` is the Part 10 bytes of an inline message, or the file of a large one, which is never
    read whole: routing needs the header only, and a copy reads the rest as it writes (`open`).
    """

    source: Source
    size: int
    dataset: Dataset
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax: str

    @property
    def part10(self) -> bytes:
        """The bytes of an inline instance; empty for one in the blob store (its blob is linked, not read)."""
        return self.source if isinstance(self.source, bytes) else b""

    def open(self) -> BinaryIO:
        """A binary stream over the instance's Part 10 bytes; `OSError` when its file cannot be opened."""
        return _open(self.source)[0]

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


def _check_complete(stream: BinaryIO, total: int, dataset: Dataset) -> None:
    """Raise `InvalidInstance` when an element's declared length runs past the bytes received.

    pydicom returns a short value for a cut element without complaint, and the pixel data is not read
    here at all, so the element headers are walked (values skipped, not read) and checked against the end.
    """
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_deflated or "FileMetaInformationGroupLength" not in dataset.file_meta:
        return
    stream.seek(132 + 12 + int(dataset.file_meta.FileMetaInformationGroupLength))
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


def _open(source: Source) -> tuple[BinaryIO, int]:
    """A stream over the instance and its size; `OSError` (with its errno) for a file that cannot be read."""
    if isinstance(source, bytes):
        return BytesIO(source), len(source)
    if not isinstance(source, Path):
        stream = source.open()
        try:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            return stream, size
        except BaseException:
            stream.close()
            raise
    stream = open(source, "rb")
    try:
        return stream, os.fstat(stream.fileno()).st_size
    except OSError:
        stream.close()
        raise


def read_instance(source: Source) -> Instance:
    """Parse an instance's header (bytes, or a file); raise `InvalidInstance` saying what is wrong with it.

    A file that cannot be read raises `OSError` with its errno (`FileNotFoundError` when it is gone): the
    caller knows what the file is (a blob) and whether to try again.
    """
    stream, size = _open(source)
    try:
        dataset = dcmread(stream, stop_before_pixels=True)
        _check_complete(stream, size, dataset)
        # Element values are read lazily: touch the ones routing uses so a malformed value fails here.
        identifiers = {
            keyword: str(dataset.get(keyword, "") or "")
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        }
        transfer_syntax = str(dataset.file_meta.TransferSyntaxUID)
        missing = [keyword for keyword, value in identifiers.items() if not value]
        if missing:
            raise InvalidInstance(f"instance lacks required attributes: {', '.join(missing)}")
        # Inside the try: the file meta's values are read lazily too, and one may be malformed (found by
        # fuzzing: an unknown VR in (0002,0002) raised NotImplementedError out of the reader).
        _check_identity(dataset, identifiers)
    except InvalidInstance:
        raise
    except OSError as exc:
        if exc.errno is None:  # pydicom's own complaint about the data (it raises OSError for some)
            raise InvalidInstance(f"malformed DICOM dataset: {describe_error(exc)}") from None
        raise  # the file, not the instance: the caller tries again rather than park it
    except InvalidDicomError as exc:
        raise InvalidInstance(f"not a DICOM Part 10 instance: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on malformed input
        raise InvalidInstance(f"malformed DICOM dataset: {describe_error(exc)}") from None
    finally:
        stream.close()
    return Instance(
        source=source,
        size=size,
        dataset=dataset,
        sop_class_uid=identifiers["SOPClassUID"],
        sop_instance_uid=identifiers["SOPInstanceUID"],
        study_instance_uid=identifiers["StudyInstanceUID"],
        series_instance_uid=identifiers["SeriesInstanceUID"],
        transfer_syntax=transfer_syntax,
    )
