"""Clean pixel data: blank the rectangles where burned-in annotations sit, in every frame of an instance.

Native (uncompressed) pixel data is changed where it lies, byte for byte outside the rectangles. Compressed
pixel data is decoded first (pydicom's decoders with the pylibjpeg and pyjpegls plugins); the instance then
stays in Explicit VR Little Endian with the decoded pixels, and the transcoding step of its destination
may compress it again. Decoding keeps the colour space the codec stored (a JPEG in YBR_FULL_422 becomes
native YBR_FULL) so that no rounding of a colour conversion is added to the image.

A rectangle is filled with 0 in every sample, as Karnak masks without a colour do in grey-scale images
(for YBR_FULL, with the chroma samples at their middle value, so the rectangle is black rather than
green). Anything that stands in the way of cleaning (an unknown codec, truncated pixel data, attributes that
do not describe the pixels) raises `PixelDataNotCleanable`: an instance that cannot be cleaned must be
rejected, never sent as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.pixels.utils import decompress
from pydicom.uid import (
    UID,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)

from karnak_dicom.errors import InvalidInstance

__all__ = ["PixelDataNotCleanable", "Rectangle", "clean_pixel_data", "decode_pixel_data"]

Rectangle = tuple[int, int, int, int]
"""(x, y, width, height) in pixels: x counts columns from the left, y rows from the top."""

# Pixel data that went through these was compressed with loss, whatever it is encoded in later; DICOM
# records that in Lossy Image Compression, which must say so once the transfer syntax no longer does.
# (JPEG 2000, JPEG-LS near-lossless and HTJ2K can be either, so they prove nothing.)
_LOSSY_SYNTAXES: Final = frozenset(
    {
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.107",  # HEVC/H.265
        "1.2.840.10008.1.2.4.108",
    }
)
_PIXEL_KEYWORDS: Final = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_SUBSAMPLED: Final = ("YBR_FULL_422", "YBR_PARTIAL_422")


class PixelDataNotCleanable(InvalidInstance):
    """The pixel data of an instance cannot be decoded or cleaned: the instance must not be sent."""


def clean_pixel_data(dataset: Dataset, rectangles: Sequence[Rectangle]) -> None:
    """Fill each (x, y, width, height) rectangle with 0 in every frame of `dataset`, in place.

    Rectangles are clipped to the image; one wholly outside it changes nothing. Compressed pixel data is
    decoded first and the dataset is left in Explicit VR Little Endian (file meta updated, SOP Instance
    UID unchanged, Lossy Image Compression kept, or set when the codec was lossy). Raises
    `PixelDataNotCleanable` when the pixels cannot be decoded or do not match the image attributes.
    """
    keyword = next((k for k in _PIXEL_KEYWORDS if k in dataset), None)
    if keyword is None or not rectangles:
        return
    if keyword == "PixelData" and _is_encapsulated(dataset):
        decode_pixel_data(dataset)
    layout = _Layout(dataset, keyword)
    element = dataset[keyword]
    data = element.value
    if not isinstance(data, bytes | bytearray):
        raise PixelDataNotCleanable(f"cannot clean {keyword}: its value is not a byte string")
    if layout.subsampled and len(data) >= layout.full_bytes:
        # Some writers label full-resolution colour as YBR_FULL_422: the length tells which it is.
        layout.subsampled = False
    if len(data) < layout.total_bytes:
        raise PixelDataNotCleanable(
            f"cannot clean {keyword}: it holds {len(data)} bytes but Rows, Columns, Samples per Pixel, Bits "
            f"Allocated and Number of Frames describe {layout.total_bytes}"
        )
    buffer = bytearray(data)
    # Big endian OW stores 16-bit words: 8-bit and 1-bit samples sit swapped in pairs within them.
    swap_pairs = layout.big_endian and element.VR == "OW" and layout.bits_allocated in (1, 8)
    if swap_pairs:
        _swap_byte_pairs(buffer)
    if layout.bits_allocated == 1:
        _clean_bits(buffer, layout, rectangles)
    else:
        _clean_samples(buffer, layout, rectangles)
    if swap_pairs:
        _swap_byte_pairs(buffer)
    element.value = bytes(buffer)


def decode_pixel_data(dataset: Dataset) -> None:
    """Decode compressed pixel data in place into native Explicit VR Little Endian pixel data.

    Keeps the SOP Instance UID and the colour space the codec stored, drops the extended offset table
    (meaningful only for encapsulated data), and sets Lossy Image Compression to 01 when the codec was
    lossy and the attribute is absent. Does nothing to native pixel data. Raises `PixelDataNotCleanable`
    when no decoder can read the pixels.
    """
    if "PixelData" not in dataset or not _is_encapsulated(dataset):
        return
    syntax = _transfer_syntax(dataset)
    if syntax is None:
        raise PixelDataNotCleanable("cannot decode encapsulated pixel data: the instance has no transfer syntax")
    try:
        decompress(dataset, as_rgb=False, generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 - decoders raise anything from ValueError to RuntimeError
        name = syntax.name if syntax.is_transfer_syntax else str(syntax)
        detail = " ".join(str(exc).split())[:300]
        raise PixelDataNotCleanable(f"cannot decode the pixel data ({name}): {detail}") from None
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in dataset:
            del dataset[keyword]
    _name_decoded_colour_space(dataset)
    if syntax in _LOSSY_SYNTAXES and not str(dataset.get("LossyImageCompression", "") or ""):
        dataset.LossyImageCompression = "01"


def _name_decoded_colour_space(dataset: Dataset) -> None:
    """Decoders return subsampled colour at full resolution; say so in Photometric Interpretation."""
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 3 or photometric not in (
        "YBR_FULL_422",
        *_SUBSAMPLED,
        "YBR_PARTIAL_420",
    ):
        return
    layout = _Layout(dataset, "PixelData")
    if len(dataset.PixelData) < layout.full_bytes:
        raise PixelDataNotCleanable(f"the decoder returned {photometric} pixel data still subsampled")
    if photometric != "YBR_FULL_422":
        # No native form keeps partial-range luminance at full resolution.
        raise PixelDataNotCleanable(f"decoded {photometric} pixel data has no uncompressed form")
    dataset.PhotometricInterpretation = "YBR_FULL"


# --- layout of native pixel data --------------------------------------------------------------------------


class _Layout:
    """Where each sample of native pixel data sits, from the image pixel attributes."""

    def __init__(self, dataset: Dataset, keyword: str) -> None:
        self.keyword = keyword
        self.rows = _int_attribute(dataset, "Rows")
        self.columns = _int_attribute(dataset, "Columns")
        self.frames = _int_attribute(dataset, "NumberOfFrames", default=1) or 1
        self.samples = _int_attribute(dataset, "SamplesPerPixel", default=1)
        self.photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
        if keyword == "FloatPixelData":
            self.bits_allocated = 32
        elif keyword == "DoubleFloatPixelData":
            self.bits_allocated = 64
        else:
            self.bits_allocated = _int_attribute(dataset, "BitsAllocated")
        self.bits_stored = _int_attribute(dataset, "BitsStored", default=self.bits_allocated)
        self.planar = _int_attribute(dataset, "PlanarConfiguration", default=0) if self.samples > 1 else 0
        syntax = _transfer_syntax(dataset)
        self.big_endian = syntax is not None and syntax.is_transfer_syntax and not syntax.is_little_endian
        self.subsampled = self.samples == 3 and self.photometric in _SUBSAMPLED
        self._check()

    def _check(self) -> None:
        if self.rows <= 0 or self.columns <= 0:
            raise PixelDataNotCleanable(f"cannot clean pixel data of {self.rows} rows and {self.columns} columns")
        if self.samples <= 0:
            raise PixelDataNotCleanable(f"cannot clean pixel data with {self.samples} samples per pixel")
        if self.bits_allocated not in (1, 8, 16, 32, 64):
            raise PixelDataNotCleanable(f"cannot clean pixel data with {self.bits_allocated} bits allocated")
        if self.bits_allocated == 1 and self.samples != 1:
            raise PixelDataNotCleanable("cannot clean 1-bit pixel data with more than one sample per pixel")
        if self.planar not in (0, 1):
            raise PixelDataNotCleanable(f"cannot clean pixel data with planar configuration {self.planar}")
        if self.subsampled and self.columns % 2:
            raise PixelDataNotCleanable(f"cannot clean {self.photometric} pixel data with an odd number of columns")

    @property
    def samples_per_frame(self) -> int:
        if self.subsampled:
            # Two luminance samples share one pair of chroma samples: Y1 Y2 Cb Cr.
            return self.rows * self.columns * 2
        return self.rows * self.columns * self.samples

    @property
    def total_bytes(self) -> int:
        bits = self.samples_per_frame * self.frames * self.bits_allocated
        return (bits + 7) // 8

    @property
    def full_bytes(self) -> int:
        """The length of the pixel data without chroma subsampling."""
        return self.rows * self.columns * self.samples * self.frames * self.bits_allocated // 8

    def dtype(self) -> np.dtype[Any]:
        order = ">" if self.big_endian else "<"
        if self.keyword == "FloatPixelData":
            return np.dtype(f"{order}f4")
        if self.keyword == "DoubleFloatPixelData":
            return np.dtype(f"{order}f8")
        return np.dtype(f"{order}u{self.bits_allocated // 8}")

    def chroma_middle(self) -> int:
        return 1 << (self.bits_stored - 1) if self.bits_stored > 0 else 0

    def fill(self) -> list[int]:
        """The value written in each sample of a cleaned pixel."""
        if self.samples == 3 and self.photometric.startswith("YBR_FULL"):
            middle = self.chroma_middle()
            return [0, middle, middle]
        return [0] * self.samples


def _int_attribute(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, None)
    if value is None or value == "":
        if default is None:
            raise PixelDataNotCleanable(f"cannot clean pixel data: {keyword} is missing")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PixelDataNotCleanable(f"cannot clean pixel data: {keyword} is not a number") from None


def _clip(rectangle: Rectangle, layout: _Layout) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the part of the rectangle inside the image, or None when nothing is."""
    x, y, width, height = (int(v) for v in rectangle)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, layout.columns), min(y + height, layout.rows)
    if width <= 0 or height <= 0 or x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _clean_samples(buffer: bytearray, layout: _Layout, rectangles: Sequence[Rectangle]) -> None:
    dtype = layout.dtype()
    count = layout.samples_per_frame * layout.frames
    samples: npt.NDArray[Any] = np.frombuffer(buffer, dtype=dtype, count=count)
    fill = layout.fill()
    if layout.subsampled:
        pairs = samples.reshape(layout.frames, layout.rows, layout.columns // 2, 4)
        middle = layout.chroma_middle()
        for rectangle in rectangles:
            clipped = _clip(rectangle, layout)
            if clipped is None:
                continue
            x0, y0, x1, y1 = clipped
            # Whole pairs: a pixel sharing its chroma with a cleaned one is cleaned too.
            pair_slice = slice(x0 // 2, (x1 + 1) // 2)
            pairs[:, y0:y1, pair_slice, 0:2] = 0
            pairs[:, y0:y1, pair_slice, 2:4] = middle
        return
    if layout.planar == 0:
        pixels = samples.reshape(layout.frames, layout.rows, layout.columns, layout.samples)
        for rectangle in rectangles:
            clipped = _clip(rectangle, layout)
            if clipped is not None:
                x0, y0, x1, y1 = clipped
                pixels[:, y0:y1, x0:x1, :] = fill
    else:
        planes = samples.reshape(layout.frames, layout.samples, layout.rows, layout.columns)
        for rectangle in rectangles:
            clipped = _clip(rectangle, layout)
            if clipped is not None:
                x0, y0, x1, y1 = clipped
                for sample, value in enumerate(fill):
                    planes[:, sample, y0:y1, x0:x1] = value


def _clean_bits(buffer: bytearray, layout: _Layout, rectangles: Sequence[Rectangle]) -> None:
    # 1-bit pixels are packed without gaps across frames, the first pixel in the least significant bit.
    count = layout.rows * layout.columns * layout.frames
    packed: npt.NDArray[np.uint8] = np.frombuffer(buffer, dtype=np.uint8)
    bits = np.unpackbits(packed, bitorder="little")
    pixels = bits[:count].reshape(layout.frames, layout.rows, layout.columns)
    for rectangle in rectangles:
        clipped = _clip(rectangle, layout)
        if clipped is not None:
            x0, y0, x1, y1 = clipped
            pixels[:, y0:y1, x0:x1] = 0
    buffer[:] = np.packbits(bits, bitorder="little").tobytes()


def _swap_byte_pairs(buffer: bytearray) -> None:
    even = len(buffer) - len(buffer) % 2
    words: npt.NDArray[np.uint16] = np.frombuffer(buffer, dtype=np.uint16, count=even // 2)
    words.byteswap(inplace=True)


def _transfer_syntax(dataset: Dataset) -> UID | None:
    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID", None) if meta is not None else None
    return UID(str(syntax)) if syntax else None


def _is_encapsulated(dataset: Dataset) -> bool:
    syntax = _transfer_syntax(dataset)
    if syntax is not None and syntax.is_transfer_syntax:
        return bool(syntax.is_encapsulated)
    # No (or a private) transfer syntax: encapsulated pixel data always has an undefined length.
    return bool(dataset["PixelData"].is_undefined_length)
