"""Writing a destination's copy as DICOM Part 10 bytes, fast for the common case.

pydicom's ``dcmwrite`` costs about 20 µs per element (a buffer object, encoding checks and a length
back-patch for every one), which made writing the largest part of de-identifying a 0.5 MB CT. Most
elements of a de-identified copy are still raw (pydicom kept the bytes read; the engine writes its ASCII
replacements raw too), and pydicom itself writes a raw element's bytes as they are when the encoding and
the character set have not changed. `write_part10` does the same for those elements with a single
``struct.pack`` and leaves everything else (sequences, decoded elements, other transfer syntaxes) to
pydicom, so its output is byte for byte what ``dcmwrite(..., enforce_file_format=True)`` writes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO
from typing import BinaryIO, Final

from pydicom import Dataset, __version_info__
from pydicom.datadict import dictionary_description
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filewriter import dcmwrite
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from karnak_dicom._internals import (
    DicomBytesIO,
    convert_raw_data_element,
    decoded_character_set,
    element_dictionary,
    tag_in_exception,
    write_data_element,
)

__all__ = ["write_part10"]

# VRs whose explicit-VR header has two reserved bytes and a 32-bit length (PS3.5 7.1.2).
_LONG_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_UNDEFINED: Final = 0xFFFFFFFF
_CHUNK: Final = 1 << 20
_PIXEL_DATA: Final = BaseTag(0x7FE00010)
# File meta elements pydicom reads (and so decodes and re-encodes) before writing: the rest go as read.
_META_DECODED: Final = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012})
_SHORT_HEADER: Final = struct.Struct("<HH2sH")
_LONG_HEADER: Final = struct.Struct("<HH2sHI")
# File meta VRs whose values are ASCII text or bytes: encoded here; others (none in PS3.10) go to pydicom.
_META_VRS: Final = frozenset({"AE", "OB", "SH", "UI"})


def write_part10(dataset: Dataset, syntax: UID, source: BinaryIO | None = None) -> bytes:
    """The Part 10 bytes of ``dataset`` encoded in ``syntax``, which its file meta information must name.

    The file meta's Media Storage SOP Class/Instance UIDs follow the dataset's SOP Class/Instance UIDs
    (de-identification replaces the latter). ``source`` is the stream ``dataset`` was read from with a
    ``defer_size``: deferred elements (the pixel data) are copied from it in chunks straight into the
    output, never read into a value of their own. Raises what pydicom raises for values it cannot encode.
    """
    if not _plain_explicit_little_endian(syntax) or not _encoding_unchanged(dataset):
        buffer = BytesIO()
        # dcmwrite, not save_as: save_as refuses a dataset read big endian and converted to little endian.
        dcmwrite(buffer, dataset, enforce_file_format=True)
        return buffer.getvalue()
    if any(tag >> 16 in (0, 2) for tag in element_dictionary(dataset)):
        raise ValueError("command (0000,eeee) or file meta (0002,eeee) elements in the dataset")
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    preamble = getattr(dataset, "preamble", None) or b"\x00" * 128
    if len(preamble) != 128:
        raise ValueError("the preamble must be 128 bytes long")
    fp.write(preamble)
    fp.write(b"DICM")
    fp.write(_encode_file_meta(dataset))
    if _PIXEL_DATA in element_dictionary(dataset):
        # As dcmwrite (PS3.5 A.4): encapsulated pixel data has an undefined length, native pixel data not.
        element = element_dictionary(dataset)[_PIXEL_DATA]
        undefined = element.length == _UNDEFINED if isinstance(element, RawDataElement) else element.is_undefined_length
        if undefined != syntax.is_compressed:
            dataset["PixelData"].is_undefined_length = syntax.is_compressed
    _write_dataset(fp, dataset, source)
    return fp.getvalue()


def _write_dataset(fp: DicomBytesIO, dataset: Dataset, source: BinaryIO | None) -> None:
    encodings = dataset.get("SpecificCharacterSet", "iso8859")
    elements = element_dictionary(dataset)
    write = fp.write
    for tag in sorted(elements):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        element = elements[tag]
        if isinstance(element, RawDataElement) and _as_read(element, source):
            length = element.length if element.value is None else len(element.value)
            write(_header(tag, str(element.VR), length))
            _write_value(write, element, source)
            continue
        with tag_in_exception(BaseTag(tag)):
            write_data_element(fp, dataset.get_item(BaseTag(tag)), encodings)


def _as_read(element: RawDataElement, source: BinaryIO | None) -> bool:
    """Whether a raw element can be written from the bytes read (its value, or `source` when deferred).

    Not: sequences and undefined lengths (pydicom writes their items and delimiters), implicit VR or big
    endian bytes, empty or sourceless deferred values (get_item converts or reads them), and values too
    long for a 16-bit length (pydicom writes those as UN).
    """
    if element.VR is None or element.VR == "SQ" or element.length == _UNDEFINED:
        return False
    if element.is_implicit_VR or not element.is_little_endian:
        return False
    if element.value is None and (source is None or not element.length):
        return False
    length = element.length if element.value is None else len(element.value)
    return element.VR in _LONG_VRS or length <= 0xFFFF


def _write_value(write: Callable[[bytes], object], element: RawDataElement, source: BinaryIO | None) -> None:
    if element.value is not None:
        write(element.value)
        return
    assert source is not None
    source.seek(element.value_tell)
    remaining = element.length
    while remaining:
        chunk = source.read(min(remaining, _CHUNK))
        if not chunk:
            raise ValueError(f"the source ends inside element {element.tag} ({remaining} bytes missing)")
        write(chunk)
        remaining -= len(chunk)


def _plain_explicit_little_endian(syntax: UID) -> bool:
    # Deflated syntaxes are explicit VR little endian too, but their dataset is compressed as a whole.
    return bool(
        syntax.is_transfer_syntax and syntax.is_little_endian and not syntax.is_implicit_VR and not syntax.is_deflated
    )


def _encoding_unchanged(dataset: Dataset) -> bool:
    """Whether raw elements may be written as read: the same encoding and character set as the original."""
    original = dataset.original_encoding
    return original in ((False, True), (None, None)) and dataset.original_character_set == decoded_character_set(
        dataset
    )


def _encode_file_meta(dataset: Dataset) -> bytes:
    """The file meta group as ``write_file_meta_info(..., enforce_standard=True)`` writes it, in a tenth of its time.

    Same rules: the SOP class and instance follow the dataset's, a missing version or implementation class
    UID gets pydicom's default, a missing implementation version name pydicom's, the group length is
    computed, and the three required UIDs must be there with a value.
    """
    meta = dataset.file_meta
    values: dict[int, tuple[str, bytes]] = {}
    for found, element in element_dictionary(meta).items():
        if found >> 16 != 2:
            raise ValueError("Only File Meta Information group (0002,eeee) elements may be present in 'file_meta'.")
        if found != 0x00020000:
            if found in _META_DECODED and isinstance(element, RawDataElement):
                element = convert_raw_data_element(element)  # a new element: the caller's stays raw
            values[int(found)] = _meta_value(element)
    for uid_tag, keyword in ((0x00020002, "SOPClassUID"), (0x00020003, "SOPInstanceUID")):
        value = dataset.get(keyword, None)
        if value and _meta_text(element_dictionary(meta).get(BaseTag(uid_tag))) != str(value):
            values[uid_tag] = _meta_value(DataElement(uid_tag, "UI", value))
    defaults = (
        (0x00020001, "OB", b"\x00\x01", True),
        (0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID, True),
        (0x00020013, "SH", f"PYDICOM {'.'.join(__version_info__)}", False),
    )
    for tag, vr, default, also_when_empty in defaults:
        if tag not in values or (also_when_empty and not values[tag][1]):
            values[tag] = _meta_value(DataElement(tag, vr, default))
    missing = [tag for tag in (0x00020002, 0x00020003, 0x00020010) if not values.get(tag, ("", b""))[1]]
    if missing:
        names = ", ".join(f"{BaseTag(tag)} {dictionary_description(tag)}" for tag in missing)
        raise AttributeError(
            f"Required File Meta Information elements are either missing or have an empty value: {names}"
        )
    body = b"".join(_element_bytes(tag, *values[tag]) for tag in sorted(values))
    return _element_bytes(0x00020000, "UL", struct.pack("<I", len(body))) + body


def _meta_text(element: DataElement | RawDataElement | None) -> str | None:
    """A file meta UID as text, read without converting the caller's element in place."""
    if element is None or element.value is None:
        return None
    if isinstance(element.value, bytes):
        return element.value.rstrip(b"\x00 ").decode("ascii", "replace")
    return str(element.value)


def _meta_value(element: DataElement | RawDataElement) -> tuple[str, bytes]:
    """(VR, value bytes) of one file meta element: text and bytes encoded here, anything else by pydicom."""
    if isinstance(element, RawDataElement) and element.VR is not None:
        return element.VR, element.value or b""
    if isinstance(element, DataElement) and element.VR in _META_VRS and isinstance(element.value, str | bytes):
        value = element.value.encode("ascii") if isinstance(element.value, str) else element.value
        if len(value) % 2:
            value += b"\x00" if element.VR in ("UI", "OB") else b" "
        return element.VR, value
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, element)
    encoded = fp.getvalue()
    vr = encoded[4:6].decode()
    return vr, encoded[12:] if vr in _LONG_VRS else encoded[8:]


def _header(tag: int, vr: str, length: int) -> bytes:
    """An explicit VR little endian element header (PS3.5 7.1.2)."""
    if vr in _LONG_VRS:
        return _LONG_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
    return _SHORT_HEADER.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)


def _element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    return _header(tag, vr, len(value)) + value
