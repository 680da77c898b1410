"""Clean pixel data: rectangles blanked in every frame, native and compressed, in many pixel layouts.

The expected images are computed independently of the code under test: pydicom decodes the original, numpy
zeroes the rectangles, and the cleaned instance must decode to exactly that.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from karnak_dicom.pixels import PixelDataNotCleanable, clean_pixel_data
from karnak_dicom.testing import pydicom_test_file
from karnak_shared.errors import InvalidInstance

ROWS, COLUMNS = 64, 80
RECTANGLES = [(5, 3, 20, 10), (60, 40, 30, 30)]  # the second one runs off the right and bottom edges


def synthetic_image(
    *,
    photometric: str = "MONOCHROME2",
    samples: int = 1,
    bits: int = 16,
    stored: int | None = None,
    signed: bool = False,
    frames: int = 1,
    planar: int = 0,
    seed: int = 1,
) -> Dataset:
    """An Explicit VR Little Endian instance whose pixels are never 0, so cleaned ones stand out."""
    stored = stored or bits
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (1, (1 << stored) - 1)
    rng = np.random.default_rng(seed)
    # A gradient with some noise: compressible like a real image, and never 0 (0 is what cleaning writes).
    shape = (frames, ROWS, COLUMNS, samples)
    base = np.indices(shape).sum(axis=0) * 37 + rng.integers(0, 16, size=shape)
    values = low + base % (high - low + 1)
    values[values == 0] = 1
    kind = "i" if signed else "u"
    array = values.astype(f"<{kind}{bits // 8}")
    if planar == 1:
        array = array.transpose(0, 3, 1, 2)
    ds.PixelData = array.tobytes()
    return ds


def decoded(ds: Dataset) -> np.ndarray[Any, Any]:
    """The pixels as pydicom decodes them from the dataset's Part 10 bytes: (frames, rows, columns[, samples])."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    array = dcmread(BytesIO(buffer.getvalue())).pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return array if frames > 1 else array[np.newaxis]


def with_rectangles_blank(array: np.ndarray[Any, Any], rectangles: list[tuple[int, int, int, int]]) -> Any:
    expected = array.copy()
    for x, y, width, height in rectangles:
        expected[:, max(y, 0) : max(y + height, 0), max(x, 0) : max(x + width, 0)] = 0
    return expected


LAYOUTS = {
    "MONOCHROME2 16-bit, 12 stored": dict(bits=16, stored=12),
    "MONOCHROME1 8-bit": dict(photometric="MONOCHROME1", bits=8),
    "MONOCHROME2 signed 16-bit, 12 stored": dict(bits=16, stored=12, signed=True),
    "MONOCHROME2 signed 16-bit": dict(bits=16, signed=True),
    "RGB 8-bit interleaved": dict(photometric="RGB", samples=3, bits=8, planar=0),
    "RGB 8-bit by plane": dict(photometric="RGB", samples=3, bits=8, planar=1),
    "RGB 16-bit by plane": dict(photometric="RGB", samples=3, bits=16, planar=1),
    "MONOCHROME2 16-bit, 3 frames": dict(bits=16, stored=12, frames=3),
    "RGB 8-bit, 2 frames by plane": dict(photometric="RGB", samples=3, bits=8, planar=1, frames=2),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_rectangles_are_blank_in_every_frame_and_nothing_else_changes(layout: dict[str, Any]) -> None:
    ds = synthetic_image(**layout)
    original = decoded(ds)

    clean_pixel_data(ds, RECTANGLES)

    cleaned = decoded(ds)
    assert np.array_equal(cleaned, with_rectangles_blank(original, RECTANGLES))
    assert (cleaned[:, 3:13, 5:25] == 0).all()
    assert (original != 0).all()  # the test would prove nothing if 0 were already there


def test_rectangles_outside_the_image_or_empty_change_nothing() -> None:
    ds = synthetic_image(bits=8)
    before = bytes(ds.PixelData)

    clean_pixel_data(ds, [(COLUMNS, 0, 10, 10), (0, ROWS + 5, 10, 10), (-20, -20, 10, 10), (3, 3, 0, 5), (3, 3, 5, -1)])

    assert bytes(ds.PixelData) == before


def test_a_rectangle_starting_left_of_and_above_the_image_is_clipped() -> None:
    ds = synthetic_image(bits=16, stored=12)
    original = decoded(ds)

    clean_pixel_data(ds, [(-10, -5, 20, 10)])

    cleaned = decoded(ds)
    assert (cleaned[:, 0:5, 0:10] == 0).all()
    assert np.array_equal(cleaned[:, 5:, :], original[:, 5:, :])
    assert np.array_equal(cleaned[:, :, 10:], original[:, :, 10:])


def test_without_rectangles_or_pixel_data_nothing_happens() -> None:
    ds = synthetic_image()
    compressed = synthetic_image()
    compressed.compress(RLELossless, generate_instance_uid=False)
    before = bytes(compressed.PixelData)
    report = Dataset()
    report.SOPInstanceUID = generate_uid()

    clean_pixel_data(compressed, [])
    clean_pixel_data(report, RECTANGLES)
    clean_pixel_data(ds, [])

    assert compressed.file_meta.TransferSyntaxUID == RLELossless
    assert bytes(compressed.PixelData) == before
    assert "PixelData" not in report


COMPRESSED = {
    "RLE Lossless, MONOCHROME2 16-bit, 2 frames": (RLELossless, dict(bits=16, stored=12, frames=2)),
    "RLE Lossless, RGB 8-bit": (RLELossless, dict(photometric="RGB", samples=3, bits=8)),
    "JPEG 2000 Lossless, MONOCHROME2 signed": (JPEG2000Lossless, dict(bits=16, stored=12, signed=True)),
    "JPEG 2000 Lossless, RGB 8-bit": (JPEG2000Lossless, dict(photometric="RGB", samples=3, bits=8)),
    "JPEG-LS Lossless, MONOCHROME1 8-bit, 3 frames": (
        JPEGLSLossless,
        dict(photometric="MONOCHROME1", bits=8, frames=3),
    ),
    "JPEG-LS Lossless, MONOCHROME2 16-bit": (JPEGLSLossless, dict(bits=16, stored=16)),
}


@pytest.mark.parametrize(("syntax", "layout"), COMPRESSED.values(), ids=COMPRESSED.keys())
def test_compressed_pixel_data_is_decoded_cleaned_and_left_in_explicit_vr_little_endian(
    syntax: str, layout: dict[str, Any]
) -> None:
    ds = synthetic_image(**layout)
    original = decoded(ds)
    ds.compress(syntax, generate_instance_uid=False)
    ds.LossyImageCompression = "00"
    sop_instance_uid = ds.SOPInstanceUID

    clean_pixel_data(ds, RECTANGLES)

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not ds["PixelData"].is_undefined_length
    assert ds.SOPInstanceUID == sop_instance_uid
    assert ds.LossyImageCompression == "00"
    assert np.array_equal(decoded(ds), with_rectangles_blank(original, RECTANGLES))


def test_lossy_jpeg_is_cleaned_black_in_its_own_colour_space_and_marked_lossy() -> None:
    ds = dcmread(pydicom_test_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    del ds.LossyImageCompression  # this writer said so itself; the gateway must say it when it is not said
    as_displayed = ds.pixel_array.astype(int)  # decoded to RGB by pydicom
    rectangle = (10, 10, 30, 20)

    clean_pixel_data(ds, [rectangle])

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "YBR_FULL"  # no colour conversion, so no rounding added
    assert ds.LossyImageCompression == "01"
    ybr = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(ds.Rows, ds.Columns, 3)
    assert (ybr[10:30, 10:40] == [0, 128, 128]).all()
    rgb = dcmread(BytesIO(_part10(ds))).pixel_array  # pydicom converts YBR_FULL to RGB for display
    assert (rgb[10:30, 10:40] <= 1).all()
    assert np.abs(rgb[30:].astype(int) - as_displayed[30:]).max() <= 2  # the rest looks as it did


def test_a_jpeg_labelled_subsampled_is_relabelled_full_resolution_after_decoding() -> None:
    ds = dcmread(pydicom_test_file("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    assert ds.PhotometricInterpretation == "YBR_FULL_422"

    clean_pixel_data(ds, [(0, 0, 10, 10)])

    assert ds.PhotometricInterpretation == "YBR_FULL"
    ybr = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(ds.Rows, ds.Columns, 3)
    assert (ybr[0:10, 0:10] == [0, 128, 128]).all()
    assert (dcmread(BytesIO(_part10(ds))).pixel_array[0:10, 0:10] <= 1).all()


def test_uncompressed_subsampled_colour_is_cleaned_in_whole_pixel_pairs() -> None:
    ds = dcmread(pydicom_test_file("SC_ybr_full_422_uncompressed.dcm"))
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    before = ds.pixel_array.copy()  # expanded to full resolution by pydicom, converted to RGB

    clean_pixel_data(ds, [(11, 4, 20, 8)])  # an odd left edge: its pair is cleaned whole

    after = dcmread(BytesIO(_part10(ds))).pixel_array
    assert (after[4:12, 10:31] <= 1).all()
    assert np.array_equal(after[12:], before[12:])
    assert np.array_equal(after[:, 32:], before[:, 32:])


def test_big_endian_pixel_data_is_cleaned_in_its_own_byte_order() -> None:
    big = dcmread(pydicom_test_file("MR_small_bigendian.dcm"))
    little = dcmread(pydicom_test_file("MR_small.dcm"))
    assert big.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(big.pixel_array, little.pixel_array)

    clean_pixel_data(big, [(2, 3, 8, 5)])

    expected = little.pixel_array.copy()
    expected[3:8, 2:10] = 0
    assert big.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert np.array_equal(big.pixel_array, expected)


def test_big_endian_8_bit_samples_in_ow_words_are_cleaned_at_the_right_columns() -> None:
    big = dcmread(pydicom_test_file("SC_rgb_small_odd_big_endian.dcm"))
    little_rgb = big.pixel_array.copy()

    clean_pixel_data(big, [(1, 0, 1, 1)])  # one pixel: its neighbours' bytes share its words

    after = big.pixel_array
    assert (after[0, 1] == 0).all()
    little_rgb[0, 1] = 0
    assert np.array_equal(after, little_rgb)


def test_one_bit_pixels_are_cleaned_across_frames() -> None:
    ds = synthetic_image(bits=8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.Rows, ds.Columns, ds.NumberOfFrames = 10, 13, 3  # 130 bits per frame: frames start mid-byte
    ds.PixelData = b"\xff" * ((10 * 13 * 3 + 7) // 8 + 1)

    clean_pixel_data(ds, [(2, 1, 4, 3)])

    pixels = ds.pixel_array
    assert pixels.shape == (3, 10, 13)
    expected = np.ones((3, 10, 13), dtype=pixels.dtype)
    expected[:, 1:4, 2:6] = 0
    assert np.array_equal(pixels, expected)


def test_undecodable_pixel_data_raises_an_invalid_instance_error_naming_the_codec() -> None:
    ds = synthetic_image()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"

    with pytest.raises(PixelDataNotCleanable, match=r"JPEG 2000") as caught:
        clean_pixel_data(ds, RECTANGLES)

    assert isinstance(caught.value, InvalidInstance)


def test_pixel_data_shorter_than_its_attributes_say_is_not_cleanable() -> None:
    ds = synthetic_image(bits=16)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    with pytest.raises(PixelDataNotCleanable, match=r"holds 5120 bytes but .* describe 10240"):
        clean_pixel_data(ds, RECTANGLES)


def test_missing_image_attributes_are_not_cleanable() -> None:
    ds = synthetic_image(bits=16)
    del ds.Rows

    with pytest.raises(PixelDataNotCleanable, match=r"Rows is missing"):
        clean_pixel_data(ds, RECTANGLES)


def test_float_pixel_data_is_cleaned_too() -> None:
    ds = synthetic_image(bits=16)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    values = np.full((ROWS, COLUMNS), 2.5, dtype="<f4")
    ds.FloatPixelData = values.tobytes()

    clean_pixel_data(ds, [(0, 0, 4, 2)])

    after = np.frombuffer(ds.FloatPixelData, dtype="<f4").reshape(ROWS, COLUMNS)
    assert (after[0:2, 0:4] == 0).all()
    assert after.sum() == pytest.approx(2.5 * (ROWS * COLUMNS - 8))


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
