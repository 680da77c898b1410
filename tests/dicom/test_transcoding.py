"""Transcoding per destination: the syntax plan (Karnak's rules) and real encode/decode round trips."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from karnak_dicom.syntaxes import ENCODABLE
from karnak_dicom.testing import pydicom_test_file
from karnak_dicom.transcoding import (
    KEEP,
    SyntaxNotCarried,
    TranscodingError,
    check_requested_syntax,
    encode_part10,
    fallback_syntaxes,
    plan_syntax,
    transcode,
)

# How each frame's codestream begins: JPEG 2000 SOC+SIZ markers, JPEG and JPEG-LS SOI, RLE header segment count.
CODESTREAM_START = {
    JPEG2000Lossless: b"\xff\x4f\xff\x51",
    JPEGLSLossless: b"\xff\xd8",
    JPEGLossless: b"\xff\xd8",
    JPEGLosslessSV1: b"\xff\xd8",
    RLELossless: b"",  # checked below: the header's segment count
}
LOSSLESS = {
    "RLE Lossless": RLELossless,
    "JPEG 2000 Lossless": JPEG2000Lossless,
    "JPEG-LS Lossless": JPEGLSLossless,
    "JPEG Lossless": JPEGLossless,
    "JPEG Lossless SV1": JPEGLosslessSV1,
}
RETIRED = ("1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55")

# --- the plan ---------------------------------------------------------------------------------------------

PLANS = [
    # original, requested, only uncompressed -> sent as
    (ExplicitVRLittleEndian, KEEP, True, ExplicitVRLittleEndian),
    (ImplicitVRLittleEndian, KEEP, True, ExplicitVRLittleEndian),
    (ExplicitVRBigEndian, KEEP, False, ExplicitVRLittleEndian),
    (RLELossless, KEEP, False, ExplicitVRLittleEndian),
    (JPEGBaseline8Bit, KEEP, False, JPEGBaseline8Bit),
    (JPEG2000Lossless, KEEP, True, JPEG2000Lossless),
    (DeflatedExplicitVRLittleEndian, KEEP, True, DeflatedExplicitVRLittleEndian),
    (ExplicitVRLittleEndian, JPEG2000Lossless, True, JPEG2000Lossless),
    (ImplicitVRLittleEndian, RLELossless, True, RLELossless),
    (ExplicitVRBigEndian, JPEGLSLossless, True, JPEGLSLossless),
    (JPEGBaseline8Bit, JPEGLSLossless, True, JPEGBaseline8Bit),
    (JPEGBaseline8Bit, JPEGLSLossless, False, JPEGLSLossless),
    (RLELossless, JPEG2000Lossless, True, ExplicitVRLittleEndian),
    (RLELossless, JPEG2000Lossless, False, JPEG2000Lossless),
    (JPEG2000Lossless, ExplicitVRLittleEndian, True, JPEG2000Lossless),
    (JPEG2000Lossless, ExplicitVRLittleEndian, False, ExplicitVRLittleEndian),
    (ExplicitVRLittleEndian, ImplicitVRLittleEndian, True, ImplicitVRLittleEndian),
]


@pytest.mark.parametrize(("original", "requested", "only_uncompressed", "expected"), PLANS)
def test_the_plan_follows_karnaks_rules(original: str, requested: str, only_uncompressed: bool, expected: str) -> None:
    assert plan_syntax(original, requested, only_uncompressed) == expected


def test_a_syntax_the_gateway_cannot_encode_is_refused_by_name() -> None:
    with pytest.raises(TranscodingError, match=r"JPEG Spectral Selection.*retired in DICOM") as caught:
        plan_syntax(ExplicitVRLittleEndian, RETIRED[0], False)
    assert caught.value.syntax == RETIRED[0]
    with pytest.raises(TranscodingError, match=r"Full Progression.*retired in DICOM"):
        check_requested_syntax(RETIRED[1])
    with pytest.raises(TranscodingError, match=r"'1.2.3.4'.*encodes only keep, .*JPEG Baseline"):
        check_requested_syntax("1.2.3.4")


def test_every_syntax_of_the_one_list_is_accepted_and_planned_as_asked() -> None:
    check_requested_syntax(KEEP)
    assert len(ENCODABLE) == 11  # Karnak's eleven less the two retired, plus Implicit VR LE and RLE
    for syntax in ENCODABLE:
        check_requested_syntax(syntax.uid)
        assert plan_syntax(ExplicitVRLittleEndian, syntax.uid, True) == syntax.uid


def test_fallbacks_are_explicit_then_implicit_vr_little_endian() -> None:
    assert fallback_syntaxes(JPEG2000Lossless) == [JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert fallback_syntaxes(ExplicitVRLittleEndian) == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert fallback_syntaxes(ImplicitVRLittleEndian) == [ImplicitVRLittleEndian, ExplicitVRLittleEndian]


# --- round trips ------------------------------------------------------------------------------------------


def synthetic_image(
    *,
    photometric: str = "MONOCHROME2",
    samples: int = 1,
    bits: int = 16,
    stored: int | None = None,
    signed: bool = False,
    frames: int = 1,
    planar: int = 0,
    rows: int = 64,
    columns: int = 48,
) -> Dataset:
    """An Explicit VR Little Endian image: a noisy gradient, compressible like a real one."""
    stored = stored or bits
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Transcoded^Only"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = planar
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    shape = (frames, rows, columns, samples)
    frame, row, column, sample = np.indices(shape)
    step = max(1, (high - low) // (rows + columns + 40))
    noise = np.random.default_rng(7).integers(0, 4, size=shape)
    values = low + ((row + column + 7 * sample + 3 * frame) * step + noise) % (high - low + 1)
    array = values.astype(f"<{'i' if signed else 'u'}{bits // 8}")
    if planar == 1:
        array = array.transpose(0, 3, 1, 2)
    ds.PixelData = array.tobytes()
    return ds


def read_back(ds: Dataset) -> Dataset:
    return dcmread(BytesIO(encode_part10(ds)))


LAYOUTS = {
    "MONOCHROME2 16-bit, 12 stored": dict(bits=16, stored=12),
    "MONOCHROME2 signed 16-bit, 3 frames": dict(bits=16, stored=16, signed=True, frames=3),
    "MONOCHROME1 8-bit": dict(photometric="MONOCHROME1", bits=8),
    "RGB 8-bit interleaved": dict(photometric="RGB", samples=3, bits=8),
    "RGB 8-bit by plane, 2 frames": dict(photometric="RGB", samples=3, bits=8, planar=1, frames=2),
}


@pytest.mark.parametrize("target", LOSSLESS.values(), ids=LOSSLESS.keys())
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_lossless_encoding_decodes_to_the_same_pixels(target: str, layout: dict[str, Any]) -> None:
    ds = synthetic_image(**layout)
    pixels = ds.pixel_array.copy()
    sop_instance_uid = ds.SOPInstanceUID

    sent = read_back(transcode(ds, target))

    assert sent.file_meta.TransferSyntaxUID == target
    frames = list(generate_frames(sent.PixelData, number_of_frames=int(sent.get("NumberOfFrames", 1))))
    assert len(frames) == int(ds.get("NumberOfFrames", 1))
    assert all(frame.startswith(CODESTREAM_START[target]) for frame in frames)
    if target == RLELossless:
        segments = ds.SamplesPerPixel * ds.BitsAllocated // 8
        assert all(int.from_bytes(frame[:4], "little") == segments for frame in frames)
    assert sent.SOPInstanceUID == sop_instance_uid == sent.file_meta.MediaStorageSOPInstanceUID
    assert sent.PatientName == "Transcoded^Only"
    assert np.array_equal(sent.pixel_array, pixels)
    if ds.SamplesPerPixel == 3:
        assert sent.PlanarConfiguration == 0

    back = read_back(transcode(sent, ExplicitVRLittleEndian))

    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not back["PixelData"].is_undefined_length
    assert np.array_equal(back.pixel_array, pixels)


def test_one_lossless_codec_to_another_keeps_the_pixels() -> None:
    ds = synthetic_image(bits=16, stored=12, frames=2)
    pixels = ds.pixel_array.copy()
    j2k = read_back(transcode(ds, JPEG2000Lossless))

    jls = read_back(transcode(j2k, JPEGLSLossless))

    assert jls.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(jls.pixel_array, pixels)
    assert "ExtendedOffsetTable" not in jls


def test_implicit_vr_becomes_explicit_vr_with_the_same_values() -> None:
    implicit = dcmread(pydicom_test_file("MR_small_implicit.dcm"))
    explicit = dcmread(pydicom_test_file("MR_small.dcm"))
    assert implicit.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian

    sent = read_back(transcode(implicit, plan_syntax(ImplicitVRLittleEndian, KEEP, True)))

    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sent["PixelData"].VR == "OW"
    assert np.array_equal(sent.pixel_array, explicit.pixel_array)
    assert sent.ImagePositionPatient == explicit.ImagePositionPatient


def test_big_endian_becomes_little_endian_with_binary_values_swapped() -> None:
    big = dcmread(pydicom_test_file("MR_small_bigendian.dcm"))
    little = dcmread(pydicom_test_file("MR_small.dcm"))

    sent = read_back(transcode(big, plan_syntax(ExplicitVRBigEndian, KEEP, True)))

    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(sent.pixel_array, little.pixel_array)
    for keyword in ("Rows", "Columns", "SliceThickness", "ImagePositionPatient", "SmallestImagePixelValue"):
        assert sent.get(keyword) == little.get(keyword), keyword


def test_big_endian_goes_straight_to_a_lossless_codec() -> None:
    big = dcmread(pydicom_test_file("MR_small_bigendian.dcm"))
    little = dcmread(pydicom_test_file("MR_small.dcm"))

    sent = read_back(transcode(big, JPEGLSLossless))

    assert sent.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(sent.pixel_array, little.pixel_array)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # a UID in pydicom's test file
def test_big_endian_32_bit_pixels_are_swapped_whole() -> None:
    big = dcmread(pydicom_test_file("rtdose_expb.dcm"))
    little = dcmread(pydicom_test_file("rtdose.dcm"))
    assert big.BitsAllocated == 32 and big["PixelData"].VR == "OW"

    sent = read_back(transcode(big, ExplicitVRLittleEndian))

    assert np.array_equal(sent.pixel_array, little.pixel_array)


def test_a_subsampled_jpeg_decodes_to_full_resolution_ybr_full() -> None:
    jpeg = dcmread(pydicom_test_file("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    assert jpeg.PhotometricInterpretation == "YBR_FULL_422"
    pixels = jpeg.pixel_array.copy()  # RGB

    sent = read_back(transcode(jpeg, RLELossless))

    assert sent.PhotometricInterpretation == "YBR_FULL"
    assert np.array_equal(sent.pixel_array, pixels)


def test_rle_originals_kept_go_out_decoded_in_explicit_vr_little_endian() -> None:
    ds = dcmread(pydicom_test_file("SC_rgb_rle_2frame.dcm"))
    pixels = ds.pixel_array.copy()

    sent = read_back(transcode(ds, plan_syntax(RLELossless, KEEP, True)))

    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(sent.pixel_array, pixels)


def test_a_lossy_original_is_recompressed_losslessly_from_its_decoded_pixels_and_stays_marked_lossy() -> None:
    jpeg = dcmread(pydicom_test_file("SC_rgb_jpeg_dcmtk.dcm"))
    del jpeg.LossyImageCompression
    decoded_once = read_back(transcode(dcmread(pydicom_test_file("SC_rgb_jpeg_dcmtk.dcm")), ExplicitVRLittleEndian))

    sent = read_back(transcode(jpeg, JPEGLSLossless))

    assert sent.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert sent.LossyImageCompression == "01"
    assert sent.PhotometricInterpretation == decoded_once.PhotometricInterpretation == "YBR_FULL"
    assert np.array_equal(sent.pixel_array, decoded_once.pixel_array)


def test_subsampled_uncompressed_colour_is_expanded_before_encoding() -> None:
    ds = dcmread(pydicom_test_file("SC_ybr_full_422_uncompressed.dcm"))
    pixels = ds.pixel_array.copy()  # expanded and converted to RGB by pydicom

    sent = read_back(transcode(ds, RLELossless))

    assert sent.PhotometricInterpretation == "YBR_FULL"
    assert np.array_equal(sent.pixel_array, pixels)


def test_an_instance_without_pixel_data_goes_out_in_explicit_vr_little_endian() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    ds.ContentDate = "20240101"

    sent = read_back(transcode(ds, JPEG2000Lossless))

    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert sent.ContentDate == "20240101"


def test_an_image_too_small_for_jpeg_2000_is_refused_naming_the_syntax() -> None:
    ds = synthetic_image(rows=16, columns=64)

    with pytest.raises(TranscodingError, match=r"JPEG 2000 \(Lossless Only\): an image of 64x16.*too small"):
        transcode(ds, JPEG2000Lossless)

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # still a consistent dataset


def test_pixel_data_the_codec_does_not_support_is_refused_naming_the_syntax() -> None:
    ds = synthetic_image(bits=32, stored=32)

    with pytest.raises(TranscodingError, match=r"JPEG-LS Lossless Image Compression.*Bits Allocated: 32"):
        transcode(ds, JPEGLSLossless)


def test_undecodable_pixel_data_is_refused_naming_the_target_and_the_codec() -> None:
    ds = synthetic_image()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])

    with pytest.raises(TranscodingError, match=r"to Explicit VR Little Endian: cannot decode .*JPEG 2000"):
        transcode(ds, ExplicitVRLittleEndian)


def test_transcoding_to_an_unsupported_syntax_or_without_file_meta_is_refused() -> None:
    with pytest.raises(TranscodingError, match=r"retired in DICOM"):
        transcode(synthetic_image(), RETIRED[1])
    bare = synthetic_image()
    del bare.file_meta
    with pytest.raises(TranscodingError, match=r"no transfer syntax"):
        transcode(bare, RLELossless)


def test_keep_and_the_same_syntax_leave_the_dataset_alone() -> None:
    ds = synthetic_image()
    before = bytes(ds.PixelData)

    assert transcode(ds, KEEP) is ds
    assert transcode(ds, ExplicitVRLittleEndian) is ds
    assert bytes(ds.PixelData) == before


def test_a_value_pydicom_cannot_encode_is_refused_naming_the_tag_not_the_value() -> None:
    ds = synthetic_image()
    with pytest.warns(UserWarning, match="cannot be assigned"):
        ds["PatientBirthDate"] = DataElement(0x00100030, "DA", ["19610203", object()])

    with pytest.raises(TranscodingError, match=r"cannot encode element \(0010, ?0030\)") as caught:
        encode_part10(ds)

    assert "1961" not in str(caught.value)


def test_part10_file_meta_follows_a_replaced_sop_instance_uid() -> None:
    ds = synthetic_image()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SOPInstanceUID = "2.25.1234"

    data = encode_part10(ds)

    assert data[128:132] == b"DICM"
    sent = dcmread(BytesIO(data))
    assert sent.file_meta.MediaStorageSOPInstanceUID == "2.25.1234"
    assert sent.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage


# --- what a target cannot carry ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", [JPEGExtended12Bit, JPEGLossless, JPEGLSLossless, JPEG2000, RLELossless])
def test_values_wider_than_bits_stored_are_refused_rather_than_wrapped_by_the_codec(target: str) -> None:
    ds = synthetic_image(bits=16, stored=12)
    ds.PixelData = (1 << 12).to_bytes(2, "little") + ds.PixelData[2:]  # one value with bit 12 set
    before = bytes(ds.PixelData)

    with pytest.raises(SyntaxNotCarried, match=r"pixel values do not fit the 12 bits stored"):
        transcode(ds, target)

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert bytes(ds.PixelData) == before


def test_a_target_that_cannot_carry_the_pixels_leaves_them_whole_in_explicit_vr_little_endian() -> None:
    ds = synthetic_image(bits=16, stored=16, frames=2)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    pixels = ds.pixel_array.copy()

    with pytest.raises(SyntaxNotCarried, match=r"JPEG Extended \(Process 2 & 4\) carries 8 or 12-bit samples only"):
        transcode(ds, JPEGExtended12Bit)

    sent = read_back(ds)
    assert sent.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(sent.pixel_array, pixels)
    assert "LossyImageCompression" not in sent


def test_signed_values_near_the_ends_of_their_range_are_refused_by_jpeg_ls_near_lossless() -> None:
    ds = synthetic_image(bits=16, stored=12, signed=True)
    ds.PixelData = (-2047).to_bytes(2, "little", signed=True) + ds.PixelData[2:]  # within NEAR (2) of -2048

    with pytest.raises(SyntaxNotCarried, match=r"could change sign in JPEG-LS Lossy"):
        transcode(ds, JPEGLSNearLossless)


def test_a_lossy_encoding_of_several_frames_is_recorded_once_after_the_earlier_ones() -> None:
    ds = synthetic_image(bits=8, frames=3, rows=64, columns=64)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "12.5"
    ds.LossyImageCompressionMethod = "ISO_10918_1"

    sent = read_back(transcode(ds, JPEG2000))

    assert sent.LossyImageCompression == "01"
    assert list(sent.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_15444_1"]
    assert str(sent.LossyImageCompressionRatio[0]) == "12.5"
    assert float(sent.LossyImageCompressionRatio[1]) > 1
    assert len(list(generate_frames(sent.PixelData, number_of_frames=3))) == 3


def test_a_lossless_target_sets_no_lossy_attribute() -> None:
    sent = read_back(transcode(synthetic_image(bits=16, stored=12), JPEGLossless))

    assert sent.file_meta.TransferSyntaxUID == JPEGLossless
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        assert keyword not in sent
