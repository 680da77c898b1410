"""Encoding native pixel data in a compressed transfer syntax, and what a lossy encoding records in the instance.

`encode_pixel_data` takes an instance whose pixel data is native, little endian, interleaved and not
subsampled (what `karnak_dicom.transcoding` hands it) and encodes it in place, or raises `EncodingRefused`
saying why the target cannot carry it, with the dataset left as it came so that it can go out in Explicit
VR Little Endian instead. Nothing is ever narrowed to fit a codec: a sample wider than the target's
precision, or a value wider than Bits Stored, is a refusal.

Codecs (measured choices in the README, "Transcoding"):
- the JPEG family (Baseline, Extended, Lossless, Lossless SV1): libjpeg-turbo 3 through imagecodecs, the
  one maintained encoder on PyPI for 12-bit lossy and 2-16-bit lossless JPEG (pydicom has no JPEG
  encoder; GDCM's wrote 12-bit and colour streams that neither pydicom nor DCMTK decoded right);
- JPEG-LS (CharLS through pyjpegls), JPEG 2000 (OpenJPEG through pylibjpeg-openjpeg) and RLE
  (pylibjpeg-rle): pydicom's own encoders with those plugins.
Lossy settings are Karnak's (its Weasis codec defaults): JPEG quality 85, JPEG-LS NEAR 2, JPEG 2000 at
10:1; JPEG Lossless (Process 14) uses predictor 6 and SV1 predictor 1, as Karnak does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pydicom import Dataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.uid import (
    JPEG2000,
    UID,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSNearLossless,
)
from pydicom.valuerep import VR

from karnak_dicom.syntaxes import encodable

__all__ = ["J2K_RATIO", "JPEG_LS_NEAR", "JPEG_QUALITY", "EncodingRefused", "encode_pixel_data"]

JPEG_QUALITY: Final = 85
JPEG_LS_NEAR: Final = 2
J2K_RATIO: Final = 10
_PREDICTOR: Final = {JPEGLossless: 6, JPEGLosslessSV1: 1}
_JPEG_LOSSY: Final = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
_JPEG_FAMILY: Final = _JPEG_LOSSY | frozenset(_PREDICTOR)
# OpenJPEG encodes with 6 resolution levels, which needs 2^5 pixels in each direction.
_J2K_MINIMUM_SIDE: Final = 32
_MONOCHROME: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
_COLOUR: Final = frozenset({"RGB", "YBR_FULL"})
# The colour models each target carries (pydicom's encoders check theirs too, in its own words).
_MODELS: Final = {
    JPEGBaseline8Bit: _MONOCHROME | _COLOUR,
    JPEGExtended12Bit: _MONOCHROME | _COLOUR,
    JPEGLossless: _MONOCHROME | _COLOUR | {"PALETTE COLOR"},
    JPEGLosslessSV1: _MONOCHROME | _COLOUR | {"PALETTE COLOR"},
    JPEGLSNearLossless: _MONOCHROME | _COLOUR,  # lossy palette indices would be other colours
    JPEG2000: _MONOCHROME | _COLOUR,
}


class EncodingRefused(Exception):
    """The target cannot carry this instance's pixel data; `reason` says why (no patient data in it)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class _Layout:
    """The Image Pixel attributes that decide what a codec can carry."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str

    @classmethod
    def of(cls, dataset: Dataset) -> _Layout:
        bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
        return cls(
            rows=int(dataset.get("Rows", 0) or 0),
            columns=int(dataset.get("Columns", 0) or 0),
            frames=int(dataset.get("NumberOfFrames", 1) or 1),
            samples=int(dataset.get("SamplesPerPixel", 1) or 1),
            bits_allocated=bits_allocated,
            bits_stored=int(dataset.get("BitsStored", bits_allocated) or bits_allocated),
            signed=int(dataset.get("PixelRepresentation", 0) or 0) == 1,
            photometric=str(dataset.get("PhotometricInterpretation", "") or "").strip().upper(),
        )

    @property
    def native_length(self) -> int:
        return self.rows * self.columns * self.samples * self.frames * self.bits_allocated // 8

    def __str__(self) -> str:
        return f"{self.bits_stored} of {self.bits_allocated} bits, {self.samples} sample(s), {self.photometric}"


def encode_pixel_data(dataset: Dataset, target: str) -> None:
    """Encode the native pixel data of `dataset` in `target` (a compressed syntax of `ENCODABLE`), in place.

    Sets the transfer syntax in the file meta and, for a lossy target, Lossy Image Compression "01" with
    the ratio and method appended (PS3.3 C.7.6.1.1.5). Raises `EncodingRefused` with the dataset unchanged.
    """
    syntax = encodable(target)
    if syntax is None:
        raise EncodingRefused(f"{target} is not a syntax the gateway encodes")
    uid, layout = UID(target), _Layout.of(dataset)
    problem = _refusal(layout, uid, syntax.name)
    if problem is not None:
        raise EncodingRefused(problem)
    pixels = _frames(dataset, layout)
    _check_values(pixels, layout, uid, syntax.name)
    if uid in _JPEG_FAMILY:
        frames = [_jpeg_frame(frame, layout, uid) for frame in pixels]
        dataset.PixelData = encapsulate(frames)
        dataset["PixelData"].VR = VR.OB
        dataset["PixelData"].is_undefined_length = True
        if uid in _JPEG_LOSSY and layout.samples == 3:
            dataset.PhotometricInterpretation = "YBR_FULL_422"  # 4:2:2 YCbCr, as DCMTK and Karnak write it
        dataset.file_meta.TransferSyntaxUID = uid
        encoded = sum(len(frame) for frame in frames)
    else:
        try:
            dataset.compress(uid, generate_instance_uid=False, **_pydicom_options(uid))
        except Exception as exc:  # noqa: BLE001 - pydicom's encoders raise ValueError, RuntimeError and their own
            detail = " ".join(str(exc).split())
            detail = detail.replace("Unable to encode as exceptions were raised by all available plugins: ", "")
            raise EncodingRefused(detail[:400]) from None
        encoded = len(dataset.PixelData)
    if syntax.lossy_method is not None:
        _record_lossy(dataset, layout.native_length / max(1, encoded), syntax.lossy_method)


def _refusal(layout: _Layout, target: UID, name: str) -> str | None:
    """Why `target` cannot carry pixel data of this layout (PS3.5 8.2 and the codecs' limits), or None."""
    models = _MODELS.get(target)
    if models is not None and (layout.photometric not in models or layout.samples != (3 if _is_colour(layout) else 1)):
        return f"{name} does not carry {layout.photometric} pixel data ({layout})"
    if target in _JPEG_FAMILY and layout.bits_allocated not in (8, 16):
        return f"{name} carries samples of 8 or 16 bits allocated, not {layout}"
    if target in _JPEG_LOSSY:
        precisions = (8,) if target == JPEGBaseline8Bit or _is_colour(layout) else (8, 12)
        if layout.bits_stored not in precisions or (layout.bits_stored == 8) != (layout.bits_allocated == 8):
            wanted = " or ".join(str(p) for p in precisions)
            return f"{name} carries {wanted}-bit samples only, not {layout}"
        if layout.signed:
            return f"{name} codes unsigned samples only, and these are signed ({layout})"
    if target in _PREDICTOR and not 2 <= layout.bits_stored <= 16:
        return f"{name} carries 2 to 16 bits stored, not {layout}"
    if target in (JPEG2000Lossless, JPEG2000) and min(layout.rows, layout.columns) < _J2K_MINIMUM_SIDE:
        return (
            f"an image of {layout.columns}x{layout.rows} pixels is too small for the JPEG 2000 encoder "
            f"(at least {_J2K_MINIMUM_SIDE} pixels each way)"
        )
    return None


def _is_colour(layout: _Layout) -> bool:
    return layout.photometric in _COLOUR


def _frames(dataset: Dataset, layout: _Layout) -> Any:
    """The pixel data as unsigned words, shaped (frames, rows, columns, samples)."""
    width = max(1, layout.bits_allocated // 8)
    count = layout.frames * layout.rows * layout.columns * layout.samples
    if layout.bits_allocated not in (8, 16, 32, 64) or len(dataset.PixelData) < count * width:
        raise EncodingRefused(
            f"the pixel data holds {len(dataset.PixelData)} bytes where its attributes describe {count * width} "
            f"({layout.rows}x{layout.columns}, {layout.frames} frame(s), {layout})"
        )
    words = np.frombuffer(dataset.PixelData, dtype=f"<u{width}", count=count)
    return words.reshape(layout.frames, layout.rows, layout.columns, layout.samples)


def _check_values(pixels: Any, layout: _Layout, target: UID, name: str) -> None:
    """Refuse values a codec would wrap or clip without a word.

    Unsigned values must fit Bits Stored (libjpeg-turbo codes wider ones without complaint, wrongly).
    Signed ones are coded as their Bits Stored two's complement; JPEG-LS near-lossless does not know the
    sign, so a value within NEAR of either end of the range could come back with the other sign (pydicom
    checks this for arrays only, not datasets).
    """
    if not pixels.size:
        return
    if not layout.signed:
        if layout.bits_stored < layout.bits_allocated and int(pixels.max()) >> layout.bits_stored:
            raise EncodingRefused(f"pixel values do not fit the {layout.bits_stored} bits stored ({layout})")
        return
    if target == JPEGLSNearLossless:
        half = 1 << (layout.bits_stored - 1)
        stored = (pixels & (2 * half - 1)).astype(np.int64)
        values = stored - (stored >= half) * (2 * half)
        if int(values.min()) < JPEG_LS_NEAR - half or int(values.max()) > half - 1 - JPEG_LS_NEAR:
            raise EncodingRefused(
                f"signed values within {JPEG_LS_NEAR} of the ends of their {layout.bits_stored}-bit range could "
                f"change sign in {name}"
            )


def _jpeg_frame(frame: Any, layout: _Layout, target: UID) -> bytes:
    import imagecodecs  # here: only instances going to the JPEG family pay for loading it

    if layout.samples == 1:
        frame = frame[:, :, 0]
    options: dict[str, Any]
    if target in _PREDICTOR:
        if layout.signed:
            frame = frame & ((1 << layout.bits_stored) - 1)  # the stored bits: their two's complement is coded
        options = {"lossless": True, "predictor": _PREDICTOR[target]}
        # RGB is coded as it is, an Adobe marker saying so; YBR_FULL without a marker is YCbCr to decoders.
        space = {"RGB": "RGB", "YBR_FULL": "UNKNOWN"}.get(layout.photometric)
        if space is not None:
            options.update(colorspace=space, outcolorspace=space)
    else:
        options = {"level": JPEG_QUALITY}
        if layout.samples == 3:
            source = "RGB" if layout.photometric == "RGB" else "YCBCR"
            options.update(colorspace=source, outcolorspace="YCBCR", subsampling="422")
    return bytes(imagecodecs.jpeg8_encode(frame, bitspersample=layout.bits_stored, **options))


def _pydicom_options(target: UID) -> dict[str, Any]:
    if target == JPEGLSNearLossless:
        return {"jls_error": JPEG_LS_NEAR}
    if target == JPEG2000:
        return {"j2k_cr": [J2K_RATIO]}
    return {}


def _record_lossy(dataset: Dataset, ratio: float, method: str) -> None:
    """Lossy Image Compression "01", this compression's ratio and method appended (PS3.3 C.7.6.1.1.5)."""
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = [*_values(dataset, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
    dataset.LossyImageCompressionMethod = [*_values(dataset, "LossyImageCompressionMethod"), method]


def _values(dataset: Dataset, keyword: str) -> list[Any]:
    value = dataset.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]
