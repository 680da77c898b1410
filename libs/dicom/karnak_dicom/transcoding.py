"""Transcoding per destination: which transfer syntax an instance goes out in, and re-encoding it.

A destination asks for `keep` or one of the syntaxes of `karnak_dicom.syntaxes.ENCODABLE` (the list the
configuration check refuses everything else with). With "transcode only uncompressed", a compressed
original is kept. As in Karnak, Implicit VR Little Endian, Explicit VR Big Endian and RLE Lossless
originals go out as Explicit VR Little Endian even under `keep`. When the destination does not accept the
chosen syntax, the sender falls back to Explicit VR Little Endian, then Implicit VR Little Endian
(`fallback_syntaxes`).

Decoding goes through `karnak_dicom.pixels.decode_pixel_data`, which keeps the colour space the codec
stored so that a lossless round trip stays lossless; encoding through `karnak_dicom.encoders`. An
instance whose pixel data the target cannot carry (16 bits to JPEG Baseline, a colour model the codec
refuses) raises `SyntaxNotCarried` with the dataset left decoded in Explicit VR Little Endian: the
processor sends it so and says why in its events, never narrowing the pixels to fit. The SOP Instance
UID stays the same, lossy targets included, so that the UIDs a destination gets are those the routing
and de-identification rules give (DCMTK's dcmcjpeg would make a new one for a lossy copy); a lossy
encoding is recorded in Lossy Image Compression, its ratio and its method.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO, Final

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.utils import expand_ybr422
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from karnak_dicom.encoders import EncodingRefused, encode_pixel_data
from karnak_dicom.errors import KarnakError
from karnak_dicom.part10 import write_part10
from karnak_dicom.pixels import PixelDataNotCleanable, decode_pixel_data
from karnak_dicom.syntaxes import ENCODABLE, KEEP, encodable, requested_syntax_problem

__all__ = [
    "KEEP",
    "SUPPORTED_SYNTAXES",
    "SyntaxNotCarried",
    "TranscodingError",
    "check_requested_syntax",
    "encode_part10",
    "fallback_syntaxes",
    "plan_syntax",
    "transcode",
]

SUPPORTED_SYNTAXES: Final[tuple[str, ...]] = tuple(syntax.uid for syntax in ENCODABLE)
# Originals that Karnak never sends as they are, even when the destination keeps the transfer syntax.
_REWRITTEN_ORIGINALS: Final = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless})
_UNCOMPRESSED_TARGETS: Final = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_SWAP_WIDTH: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class TranscodingError(KarnakError):
    """An instance cannot be encoded in a transfer syntax; `syntax` is the UID that was asked for."""

    def __init__(self, syntax: str, reason: str) -> None:
        self.syntax = syntax
        self.reason = reason
        super().__init__(f"cannot transcode to {_name(syntax)}: {reason}")


class SyntaxNotCarried(TranscodingError):
    """The target cannot carry this instance's pixel data; the dataset is left in Explicit VR Little Endian."""


def check_requested_syntax(requested: str) -> None:
    """Raise `TranscodingError` unless `requested` is `keep` or a transfer syntax the gateway encodes.

    Meant for start-up, so that a destination asking for an unsupported syntax is a configuration error.
    """
    problem = requested_syntax_problem(requested)
    if problem is not None:
        raise TranscodingError(requested, problem)


def plan_syntax(original: str, requested: str, only_uncompressed: bool) -> str:
    """The transfer syntax an instance in `original` goes out in, for a destination asking `requested`.

    `requested` is `keep` or a UID of `SUPPORTED_SYNTAXES`; with `only_uncompressed`, a compressed
    original is kept. A kept Implicit VR LE, Explicit VR Big Endian or RLE Lossless original becomes
    Explicit VR Little Endian.
    """
    check_requested_syntax(requested)
    if requested == KEEP or (only_uncompressed and UID(original).is_compressed):
        return ExplicitVRLittleEndian if original in _REWRITTEN_ORIGINALS else original
    return requested


def fallback_syntaxes(planned: str) -> list[str]:
    """The syntaxes to offer a destination in order of preference: the planned one, then the fallbacks."""
    offered: list[str] = []
    for syntax in (planned, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        if syntax not in offered:
            offered.append(syntax)
    return offered


def transcode(dataset: Dataset, target: str) -> Dataset:
    """Re-encode `dataset` in place in the transfer syntax `target` and return it.

    Compressed pixel data is decoded first; native pixel data is then encoded in `target`. An instance
    without pixel data has nothing to compress and goes out in Explicit VR Little Endian when a
    compressed syntax is asked for. Raises `SyntaxNotCarried` when `target` cannot carry the pixel data
    (the dataset is then decoded, in Explicit VR Little Endian) and `TranscodingError` when the pixel
    data cannot be decoded; both name the syntax.
    """
    current = _transfer_syntax(dataset)
    if current is None:
        raise TranscodingError(target, "the instance has no transfer syntax in its file meta information")
    if target == KEEP or current == target:
        return dataset
    check_requested_syntax(target)
    if current.is_transfer_syntax and not current.is_little_endian:
        _to_little_endian(dataset)
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "PixelData" in dataset and _is_encapsulated(dataset, current):
        try:
            decode_pixel_data(dataset)
        except PixelDataNotCleanable as exc:
            raise TranscodingError(target, str(exc)) from None
    if target in _UNCOMPRESSED_TARGETS or "PixelData" not in dataset:
        dataset.file_meta.TransferSyntaxUID = UID(target) if target in _UNCOMPRESSED_TARGETS else ExplicitVRLittleEndian
        return dataset
    # Native little endian pixel data from here on.
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _prepare_for_encoder(dataset)
    try:
        encode_pixel_data(dataset, target)
    except EncodingRefused as exc:
        raise SyntaxNotCarried(target, exc.reason) from None
    return dataset


def encode_part10(dataset: Dataset, source: BinaryIO | None = None) -> bytes:
    """The Part 10 bytes of `dataset` in the transfer syntax of its file meta information.

    The file meta's Media Storage SOP Class/Instance UIDs follow the dataset's SOP Class/Instance UIDs
    (de-identification replaces the latter). `source`: the stream `dataset` was read from with a
    `defer_size`, whose deferred elements are copied from there (see `karnak_dicom.part10`).
    """
    syntax = _transfer_syntax(dataset)
    if syntax is None:
        raise TranscodingError("", "the instance has no transfer syntax in its file meta information")
    try:
        return write_part10(dataset, syntax, source)
    except OSError as exc:
        if exc.errno is not None:
            raise  # reading the source (the blob file) failed, not the encoding: the caller retries
        # pydicom raises OSError (without errno) for a value it cannot pack, quoting the value.
        where = re.match(r"With tag (\([0-9A-Fa-f]{4}, ?[0-9A-Fa-f]{4}\))", str(exc))
        element = f" {where.group(1)}" if where else ""
        raise TranscodingError(str(syntax), f"cannot encode element{element} (OSError)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on values it cannot encode
        # pydicom's messages may quote the offending value (a birth date, a name): keep the tag and the kind.
        where = re.match(r"With tag (\([0-9A-Fa-f]{4}, ?[0-9A-Fa-f]{4}\))", str(exc))
        element = f" {where.group(1)}" if where else ""
        raise TranscodingError(str(syntax), f"cannot encode element{element} ({type(exc).__name__})") from None


# --- helpers ----------------------------------------------------------------------------------------------


def _name(syntax: str) -> str:
    listed = encodable(syntax)  # the names the configuration check and the console show
    if listed is not None:
        return listed.name
    uid = UID(syntax)
    return str(uid.name) if uid.is_transfer_syntax else f"'{syntax}'"


def _transfer_syntax(dataset: Dataset) -> UID | None:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID", None) if isinstance(meta, FileMetaDataset | Dataset) else None
    return UID(str(syntax)) if syntax else None


def _is_encapsulated(dataset: Dataset, syntax: UID) -> bool:
    if syntax.is_transfer_syntax:
        return bool(syntax.is_encapsulated)
    return bool(dataset["PixelData"].is_undefined_length)


def _to_little_endian(dataset: Dataset) -> None:
    """Swap the bytes of the binary values pydicom leaves as read (OW, OF, OL, OD, OV), recursively.

    pydicom re-encodes numbers and text itself when the byte order changes, but not these.
    """
    for element in dataset:  # iterating turns raw elements into decoded ones
        if element.VR == "SQ":
            for item in element.value:
                _to_little_endian(item)
            continue
        width = _SWAP_WIDTH.get(str(element.VR))
        if element.tag == 0x7FE00010 and element.VR == "OW":
            # 32- and 64-bit pixels are stored whole in big endian, not as pairs of 16-bit words.
            width = max(2, int(dataset.get("BitsAllocated", 16) or 16) // 8)
        if width is None or not isinstance(element.value, bytes | bytearray) or not element.value:
            continue
        data = bytes(element.value)
        usable = len(data) - len(data) % width
        swapped = np.frombuffer(data, dtype=f">u{width}", count=usable // width).astype(f"<u{width}")
        element.value = swapped.tobytes() + data[usable:]


def _prepare_for_encoder(dataset: Dataset) -> None:
    """Bring native pixel data into the shape the encoders handle: interleaved, without subsampling."""
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    bits = int(dataset.get("BitsAllocated", 0) or 0)
    if samples == 3 and photometric in ("YBR_FULL_422", "YBR_PARTIAL_422") and bits in (8, 16):
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        subsampled_length = rows * columns * 2 * frames * bits // 8
        if len(dataset.PixelData) < rows * columns * 3 * frames * bits // 8:
            dataset.PixelData = expand_ybr422(dataset.PixelData[:subsampled_length], bits)
        dataset.PhotometricInterpretation = "YBR_FULL"
        dataset.PlanarConfiguration = 0
    elif samples > 1 and int(dataset.get("PlanarConfiguration", 0) or 0) == 1 and bits in (8, 16, 32):
        dataset.PixelData = _interleave(dataset, samples, bits)
        dataset.PlanarConfiguration = 0


def _interleave(dataset: Dataset, samples: int, bits: int) -> bytes:
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    count = frames * samples * rows * columns
    data: Any = np.frombuffer(dataset.PixelData, dtype=f"<u{bits // 8}", count=count)
    planes = data.reshape(frames, samples, rows, columns)
    return bytes(planes.transpose(0, 2, 3, 1).tobytes())
