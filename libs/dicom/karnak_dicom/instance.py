"""Reading what routing needs from an instance's Part 10 bytes or blob file, without reading its pixel data."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Protocol

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError

from karnak_dicom._internals import copy_element_dictionary, data_element_generator, element_dictionary
from karnak_dicom.errors import InvalidInstance

# Study-level values shown in notification emails. They are the values as sent (de-identified for a
# de-identifying destination) and are never logged.
DISPLAY_KEYWORDS = ("PatientID", "StudyDescription", "StudyDate", "SeriesDescription")
# Values above this size (the pixel data) are not read with the rest: a copy streams them from the source.
DEFER_BYTES = 64 * 1024
_PIXEL_DATA = 0x7FE00010


class ByteSource(Protocol):
    """Bytes kept where no file name reaches them (an object store): read through a seekable stream.

    `open` raises what its store raises for a missing or unreadable object; reads raise `OSError` with
    an errno, as a file's would.
    """

    def open(self) -> BinaryIO: ...


Source = bytes | Path | ByteSource


@dataclass(frozen=True)
class Instance:
    """An instance as received: where its bytes are, and its attributes, values over `DEFER_BYTES` not read.

    `source` is the Part 10 bytes of an inline message, or the file of a large one, which is never
    read whole: routing needs the attributes only, and a copy reads the rest as it writes (`open`).
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

    def changeable_dataset(self, stream: BinaryIO) -> Dataset:
        """A dataset of the instance that a transformation may change without changing `dataset`.

        `stream` is open over the instance's bytes (`open`): deferred values are read from it. The dataset
        read is copied (element dictionaries of its own; raw elements are immutable, and the engine
        replaces elements rather than change them) unless routing decoded a sequence or the pixel data,
        whose values a transformation changes in place: then it is read again from `stream`.
        """
        elements = element_dictionary(self.dataset)
        if any(isinstance(e, DataElement) and (e.VR == "SQ" or e.tag == _PIXEL_DATA) for e in elements.values()):
            stream.seek(0)
            return dcmread(stream, defer_size=DEFER_BYTES)
        changeable = copy.copy(self.dataset)
        copy_element_dictionary(self.dataset, changeable)
        meta = copy.copy(self.dataset.file_meta)
        copy_element_dictionary(self.dataset.file_meta, meta)
        for copied in (changeable, meta):
            # Decoded elements change in place when set by keyword (`ds.PatientID = ...`): copy those few.
            own = element_dictionary(copied)
            for tag, element in own.items():
                if isinstance(element, DataElement):
                    own[tag] = _own_element(element)
        changeable.file_meta = meta
        changeable.buffer = stream  # where pydicom reads a deferred value from when a transformation asks
        return changeable

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


def _own_element(element: DataElement) -> DataElement:
    """A copy of a decoded element whose value is its own (text, numbers and bytes are immutable)."""
    if isinstance(element.value, str | bytes | int | float) or element.value is None:
        return copy.copy(element)
    return copy.deepcopy(element)


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

    pydicom returns a short value for a cut element without complaint, and values over `DEFER_BYTES` are
    not read at all. When every element read has a defined length, their offsets and lengths say it: each
    must end within the bytes, and the last where they end (otherwise the instance ends inside an element's
    header). Otherwise (an undefined length) the element headers are walked again, values skipped.
    """
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_deflated or "FileMetaInformationGroupLength" not in dataset.file_meta:
        return
    elements = element_dictionary(dataset)
    raw = [e for e in elements.values() if isinstance(e, RawDataElement)]
    # pydicom decodes Specific Character Set as it reads: such an element has no offset, so the offsets
    # answer only when the last element is a raw one (and, for a sequence, was not decoded either).
    last_is_raw = bool(elements) and isinstance(elements[max(elements)], RawDataElement)
    decoded_sequence = any(isinstance(e, DataElement) and e.VR == "SQ" for e in elements.values())
    if last_is_raw and not decoded_sequence and all(e.length != _UNDEFINED_LENGTH for e in raw):
        end = 0
        for read in sorted(raw, key=lambda e: e.value_tell):
            if read.value_tell + read.length > total:
                raise InvalidInstance(
                    f"truncated instance: element {read.tag} declares {read.length} bytes but only "
                    f"{max(total - read.value_tell, 0)} follow"
                )
            end = read.value_tell + read.length
        if end < total:
            raise InvalidInstance(
                f"truncated instance: it ends with {total - end} bytes of an incomplete element header"
            )
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
        dataset = dcmread(stream, defer_size=DEFER_BYTES)
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
