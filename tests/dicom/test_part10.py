"""The processor's Part 10 writer writes exactly what pydicom's dcmwrite writes, only faster."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from karnak_dicom.deid import Deidentifier, InstanceExcluded, hash_pseudonym, load_profile
from karnak_dicom.part10 import write_part10
from karnak_dicom.testing import pydicom_test_file, pydicom_test_files
from karnak_dicom.transcoding import encode_part10

SECRET = bytes.fromhex("e4da3b7fbbce2345d7772b0674a318d5")
PROFILE = load_profile(Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml")


def _files() -> list[str]:
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in map(str, pydicom_test_files("*.dcm")):
            try:
                ds = dcmread(path)
                dcmwrite(BytesIO(), dcmread(path), enforce_file_format=True)
            except Exception:  # noqa: BLE001 - deliberately broken files, or files pydicom cannot write back
                continue
            if "TransferSyntaxUID" in ds.file_meta:
                paths.append(path)
    return paths


FILES = _files()


def _both_writers(ds: Dataset) -> tuple[bytes, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = write_part10(ds, UID(str(ds.file_meta.TransferSyntaxUID)))
        reference = BytesIO()
        dcmwrite(reference, ds, enforce_file_format=True)
    return ours, reference.getvalue()


def test_enough_files_of_enough_transfer_syntaxes_are_compared() -> None:
    syntaxes = {str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID) for path in FILES}
    assert len(FILES) >= 60
    assert len(syntaxes) >= 8


@pytest.mark.parametrize("path", FILES, ids=lambda path: Path(path).name)
def test_an_untouched_file_is_written_byte_for_byte_as_dcmwrite_writes_it(path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
    ours, reference = _both_writers(ds)
    assert ours == reference


@pytest.mark.parametrize("path", FILES, ids=lambda path: Path(path).name)
def test_a_de_identified_file_is_written_byte_for_byte_as_dcmwrite_writes_it(path: str) -> None:
    engine = Deidentifier.for_project(PROFILE, "study-x", SECRET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path)
        try:
            engine.apply(ds, hash_pseudonym(SECRET, str(ds.get("PatientID", ""))))
        except InstanceExcluded:  # the profile refuses this file (e.g. no mask for its burned-in text)
            pytest.skip("the profile does not make a copy of this file")
    ours, reference = _both_writers(ds)
    assert ours == reference


# pydicom itself reads a deferred sequence of a truncated file differently from a whole read; the processor
# rejects truncated instances before it makes any copy (tests/e2e/test_bad_input.py).
COMPLETE_FILES = [path for path in FILES if "truncated" not in Path(path).name]


@pytest.mark.parametrize("path", COMPLETE_FILES, ids=lambda path: Path(path).name)
def test_deferred_values_are_copied_from_the_source_stream_as_dcmwrite_would_write_them(path: str) -> None:
    data = Path(path).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = BytesIO(data)
        deferred = dcmread(stream, defer_size=256)
        ours = write_part10(deferred, UID(str(deferred.file_meta.TransferSyntaxUID)), source=stream)
        reference = BytesIO()
        dcmwrite(reference, dcmread(BytesIO(data)), enforce_file_format=True)
    assert ours == reference.getvalue()


def test_a_deferred_pixel_data_is_not_read_into_the_dataset() -> None:
    with open(pydicom_test_file("CT_small.dcm"), "rb") as stream:
        ds = dcmread(stream, defer_size=1024)

        written = write_part10(ds, ExplicitVRLittleEndian, source=stream)

    assert dcmread(BytesIO(written)).PixelData == dcmread(pydicom_test_file("CT_small.dcm")).PixelData

    element = ds._dict[BaseTag(0x7FE00010)]
    assert isinstance(element, RawDataElement) and element.value is None


def test_the_callers_file_meta_is_left_as_it_was() -> None:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    before = {tag: (element.VR, element.value) for tag, element in ds.file_meta.items()}
    ds.SOPInstanceUID = generate_uid()

    written = dcmread(BytesIO(write_part10(ds, ExplicitVRLittleEndian)))

    assert written.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert {tag: (element.VR, element.value) for tag, element in ds.file_meta.items()} == before


def test_raw_elements_are_written_as_they_were_read() -> None:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    element = ds._dict[BaseTag(0x00080070)]
    assert isinstance(element, RawDataElement)

    written = write_part10(ds, ExplicitVRLittleEndian)

    header = b"\x08\x00\x70\x00" + element.VR.encode() + len(element.value).to_bytes(2, "little")
    assert header + element.value in written


def test_file_meta_elements_in_the_dataset_are_refused_with_a_clear_error() -> None:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    ds.add_new(0x00020016, "AE", "SOMEWHERE")

    with pytest.raises(ValueError, match="file meta"):
        write_part10(ds, ExplicitVRLittleEndian)


def test_an_element_that_cannot_be_encoded_is_named_without_its_value() -> None:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds["PatientName"].VR = "US"  # a name cannot be written as an unsigned short

    with pytest.raises(Exception, match=r"\(0010, ?0010\)") as caught:
        encode_part10(ds)
    assert "Doe" not in str(caught.value)


def _minimal(meta: dict[str, object]) -> Dataset:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    ds.file_meta = FileMetaDataset()
    for keyword, value in meta.items():
        setattr(ds.file_meta, keyword, value)
    return ds


@pytest.mark.parametrize(
    "meta",
    [
        {"TransferSyntaxUID": ExplicitVRLittleEndian},
        {"TransferSyntaxUID": ExplicitVRLittleEndian, "FileMetaInformationVersion": b"", "ImplementationClassUID": ""},
        {"TransferSyntaxUID": ExplicitVRLittleEndian, "SourceApplicationEntityTitle": "MODALITY1"},
        {"TransferSyntaxUID": ExplicitVRLittleEndian, "ImplementationVersionName": "ODD"},
    ],
    ids=["minimal", "empty-defaults", "source-ae", "odd-length-name"],
)
def test_the_file_meta_gets_the_defaults_and_lengths_dcmwrite_gives_it(meta: dict[str, object]) -> None:
    ours, reference = _both_writers(_minimal(meta))

    assert ours == reference


def test_a_file_meta_without_transfer_syntax_value_is_refused_naming_it() -> None:
    ds = _minimal({"TransferSyntaxUID": ""})

    with pytest.raises(AttributeError, match=r"\(0002,0010\) Transfer Syntax UID"):
        write_part10(ds, ExplicitVRLittleEndian)


def test_encapsulated_pixel_data_stored_with_a_defined_length_is_written_undefined_as_dcmwrite_does() -> None:
    ds = dcmread(pydicom_test_file("SC_rgb_jpeg_dcmtk.dcm"))
    ds["PixelData"].is_undefined_length = False

    ours, reference = _both_writers(ds)

    assert ours == reference


def test_file_meta_values_pydicom_decodes_are_re_encoded_as_dcmwrite_does() -> None:
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    meta = ds.file_meta._dict
    # Padding-only implementation class UID (so: empty, and replaced) and a space-padded syntax UID.
    meta[BaseTag(0x00020012)] = RawDataElement(BaseTag(0x00020012), "UI", 2, b"\x00\x00", 0, False, True)
    syntax = b"1.2.840.10008.1.2.1 "
    meta[BaseTag(0x00020010)] = RawDataElement(BaseTag(0x00020010), "UI", len(syntax), syntax, 0, False, True)

    ours, reference = _both_writers(ds)

    assert ours == reference
