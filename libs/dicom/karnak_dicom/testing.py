"""Test DICOM for the gateway's tests and benchmarks: one builder of instances, studies and files.

As nameko ships `nameko.testing` for the services built on it, the DICOM library ships what its users need
to test with: `make_part10` (a small CT as Part 10 bytes), `make_study` (a study of several SOP classes
written as files), `build_ct` (a scanner's 0.5 MB CT slice with ~120 attributes, sequences and private
blocks, for de-identification benchmarks), `to_part10` (any dataset as Part 10 bytes) and
`pydicom_test_files` (the test files pydicom ships, read offline: never the network). Tests import it, and
so do the benchmarks, which never import `tests/`. It needs pydicom only (numpy for `ct_slice_pixels`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom.data
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

__all__ = [
    "ACCESSION_NUMBER",
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "PATIENT_BIRTH_DATE",
    "PATIENT_ID",
    "PATIENT_NAME",
    "StudyFiles",
    "build_ct",
    "build_multiframe",
    "ct_slice_pixels",
    "dataset_bytes",
    "make_instance",
    "make_part10",
    "make_study",
    "pydicom_test_file",
    "pydicom_test_files",
    "to_part10",
    "with_file_meta",
    "with_image",
    "with_jpeg_like_image",
    "write_ct_series",
    "write_file",
]

CT_IMAGE_STORAGE = str(CTImageStorage)
MR_IMAGE_STORAGE = str(MRImageStorage)
MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture

PATIENT_NAME = "DOE^JANE^TESTPATIENT"
PATIENT_ID = "PID-4711-SECRET"
PATIENT_BIRTH_DATE = "19610203"
ACCESSION_NUMBER = "ACC-99887766"


# --- Part 10 -------------------------------------------------------------------------------------------------


def with_file_meta(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """`ds` with a file meta group naming its SOP class and instance and `transfer_syntax`."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", CT_IMAGE_STORAGE)))
    ds.file_meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "1.2.3")))
    return ds


def to_part10(ds: Dataset, transfer_syntax: str | None = None) -> bytes:
    """The Part 10 bytes of `ds` (its own file meta, else one made for `transfer_syntax` or Explicit VR LE)."""
    if transfer_syntax is not None or "TransferSyntaxUID" not in getattr(ds, "file_meta", ()):
        with_file_meta(ds, transfer_syntax or ExplicitVRLittleEndian)
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_file(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write `ds` as a Part 10 file in `transfer_syntax`."""
    path.write_bytes(to_part10(ds, transfer_syntax))
    return path


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group: what must arrive unchanged."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        return data
    # Group 0002 is explicit VR little endian; its length is in (0002,0000).
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def pydicom_test_files(pattern: str = "*") -> list[Path]:
    """The test files pydicom ships in its package, matching `pattern` (read offline, never downloaded).

    `pydicom.data.get_testdata_files` also tries to download pydicom's extra data from the network (15 s
    when there is none); the files inside the package are enough for the tests.
    """
    return sorted(path for path in _PYDICOM_FILES.rglob(pattern) if path.is_file())


def pydicom_test_file(name: str) -> str:
    """The path of one of pydicom's own test files (e.g. ``CT_small.dcm``); `FileNotFoundError` when absent."""
    found = pydicom_test_files(name)
    if not found:
        raise FileNotFoundError(f"pydicom ships no test file {name} in {_PYDICOM_FILES}")
    return str(found[0])


_PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


# --- small instances ----------------------------------------------------------------------------------------


def make_part10(
    *,
    sop_class_uid: str = CT_IMAGE_STORAGE,
    sop_instance_uid: str | None = "1.2.826.0.1.3680043.9.7001.1.1",
    study_instance_uid: str = "1.2.826.0.1.3680043.9.7001.1",
    series_instance_uid: str = "1.2.826.0.1.3680043.9.7001.1.0",
    study_description: str = "RESEARCH CT",
    pixel_bytes: int = 0,
    **attributes: Any,
) -> bytes:
    """The Part 10 bytes (file meta + dataset, Explicit VR Little Endian) of a small CT instance."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    if sop_instance_uid is not None:
        ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.PatientID = "PAT-0042"
    ds.PatientName = "Doe^John"
    ds.StudyDescription = study_description
    ds.StudyDate = "20240102"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.Modality = "CT"
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)  # `Keyword=None` leaves the attribute out
        else:
            setattr(ds, keyword, value)
    if pixel_bytes:
        ds.Rows = 1
        ds.Columns = pixel_bytes // 2
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * (pixel_bytes // 256) + b"\x00" * (pixel_bytes % 256)
    # The file meta says what the parameters say, even when `attributes` make the dataset say otherwise.
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid or "1.2.3")
    return to_part10(ds)


# --- studies -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFiles:
    """A study written as files: its Study Instance UID and the paths."""

    study_uid: str
    paths: list[Path]

    def by_sop_instance(self) -> dict[str, Path]:
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in self.paths}


def make_instance(sop_class: str, study_uid: str, series_uid: str, number: int, description: str) -> Dataset:
    """An instance of the test patient (name, ID, birth date, accession number) in a research study."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = PATIENT_BIRTH_DATE
    ds.AccessionNumber = ACCESSION_NUMBER
    ds.StudyDescription = "RESEARCH BRAIN"
    ds.SeriesDescription = description
    ds.StudyDate = "20260101"
    ds.StudyTime = "101010"
    ds.InstanceNumber = number
    ds.SeriesNumber = 1
    ds.Modality = {CT_IMAGE_STORAGE: "CT", MR_IMAGE_STORAGE: "MR"}.get(str(sop_class), "OT")
    return ds


def with_image(ds: Dataset, rows: int, columns: int, frames: int = 1, seed: int = 0) -> None:
    """Give `ds` 16-bit (12 stored) monochrome pixels, distinct per instance unless `seed` is given."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    size = rows * columns * 2 * frames
    # Distinct bytes per instance so a mix-up between instances cannot go unnoticed.
    pattern = os.urandom(4096) if seed == 0 else bytes((seed * 7 + i) % 251 for i in range(4096))
    ds.PixelData = (pattern * (size // len(pattern) + 1))[:size]


def with_jpeg_like_image(ds: Dataset, body: bytes) -> None:
    """A 64 x 64 8-bit image whose one encapsulated fragment is `body` between JPEG's start and end markers."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([b"\xff\xd8" + body + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"


def make_study(
    directory: Path,
    *,
    ct: int = 40,
    mr: int = 12,
    multiframe: int = 1,
    large: int = 1,
    compressed: int = 1,
    study_uid: str | None = None,
) -> StudyFiles:
    """A study of several SOP classes: 0.5 MB CT, small MR (inline), multi-frame, a 2 MB CT, a JPEG one."""
    directory.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid()
    paths: list[Path] = []
    ct_series, mr_series, mf_series, sc_series = (generate_uid() for _ in range(4))
    for i in range(ct):
        ds = make_instance(CTImageStorage, study, ct_series, i + 1, "CT AXIAL")
        with_image(ds, 512, 512)
        paths.append(write_file(ds, directory / f"ct{i:03d}.dcm"))
    for i in range(mr):
        ds = make_instance(MRImageStorage, study, mr_series, i + 1, "MR T1")
        with_image(ds, 64, 64)
        paths.append(write_file(ds, directory / f"mr{i:03d}.dcm"))
    for i in range(multiframe):
        ds = make_instance(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, study, mf_series, i + 1, "MULTIFRAME")
        with_image(ds, 256, 256, frames=12)
        paths.append(write_file(ds, directory / f"mf{i:03d}.dcm"))
    for i in range(large):
        ds = make_instance(CTImageStorage, study, ct_series, ct + i + 1, "CT AXIAL")
        with_image(ds, 1024, 1024)
        paths.append(write_file(ds, directory / f"large{i:03d}.dcm"))
    for i in range(compressed):
        ds = make_instance(SecondaryCaptureImageStorage, study, sc_series, i + 1, "SC JPEG")
        # The gateway never decodes pixel data, so an opaque fragment stands in for a JPEG stream.
        with_jpeg_like_image(ds, os.urandom(2000))
        paths.append(write_file(ds, directory / f"sc{i:03d}.dcm", JPEGLosslessSV1))
    return StudyFiles(study, paths)


# --- a scanner's CT (the benchmarks' workload) --------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def build_ct(study_uid: str, series_uid: str, number: int, frame_of_reference: str) -> Dataset:
    """A CT slice with the attributes a scanner typically writes, 0.5 MB of pixels."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceCreationDate = "20260312"
    ds.InstanceCreationTime = "101512.123000"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260312"
    ds.StudyTime = "101010"
    ds.SeriesTime = "101200"
    ds.AcquisitionTime = ds.ContentTime = f"1013{number % 60:02d}.500000"
    ds.AccessionNumber = "ACC-2026-000123"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME MEDICAL"
    ds.InstitutionName = "Hopital Cantonal"
    ds.InstitutionAddress = "Rue du Lac 1, 1200 Geneve"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StationName = "CT-ROOM-2"
    ds.StudyDescription = "CT THORAX AVEC INJECTION"
    ds.ProcedureCodeSequence = [_code("CTCHEST", "99LOCAL", "CT chest with contrast")]
    ds.SeriesDescription = "THORAX 1.0 B30f"
    ds.InstitutionalDepartmentName = "Radiologie"
    ds.PerformingPhysicianName = "Cuddy^Lisa"
    ds.OperatorsName = "Chase^Robert"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.ReferencedStudySequence = [Dataset()]
    ds.ReferencedStudySequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane^Marie"
    ds.PatientID = "PID-0012345678"
    ds.IssuerOfPatientID = "HOSPITAL"
    ds.PatientBirthDate = "19610203"
    ds.PatientSex = "F"
    ds.PatientAge = "065Y"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "61"
    ds.PatientAddress = "Chemin des Roses 4, 1201 Geneve"
    ds.ContrastBolusAgent = "IOMERON 350"
    ds.ScanOptions = "HELICAL MODE"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.DeviceSerialNumber = "SN-88231"
    ds.SoftwareVersions = "VA40"
    ds.ProtocolName = "THORAX_INJ"
    ds.ReconstructionDiameter = "360"
    ds.DistanceSourceToDetector = "1085.6"
    ds.DistanceSourceToPatient = "595"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "160"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = "212"
    ds.Exposure = "106"
    ds.FilterType = "FLAT"
    ds.GeneratorPower = "25"
    ds.FocalSpots = "1.2"
    ds.ConvolutionKernel = "B30f"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "4711"
    ds.SeriesNumber = 3
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = number
    ds.ImagePositionPatient = ["-180.0", "-180.0", f"{-number * 1.0:.1f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{-number * 1.0:.1f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 512
    ds.Columns = 512
    ds.PixelSpacing = ["0.703125", "0.703125"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.RequestedProcedureDescription = "CT THORAX"
    ds.RequestAttributesSequence = [Dataset()]
    ds.RequestAttributesSequence[0].RequestedProcedureID = "RP-1"
    ds.RequestAttributesSequence[0].ScheduledProcedureStepID = "SPS-1"
    ds.PerformedProcedureStepStartDate = "20260312"
    ds.PerformedProcedureStepStartTime = "101000"
    ds.PerformedProcedureStepID = "PPS-77"
    ds.PerformedProcedureStepDescription = "CT THORAX"
    ds.SourceImageSequence = [Dataset()]
    ds.SourceImageSequence[0].ReferencedSOPClassUID = CTImageStorage
    ds.SourceImageSequence[0].ReferencedSOPInstanceUID = generate_uid()
    for group, creator, count in ((0x0009, "ACME_IDEN_01", 12), (0x0019, "ACME_ACQU_01", 18)):
        block = ds.private_block(group, creator, create=True)
        for offset in range(count):
            block.add_new(offset, "LO", f"vendor value {offset}")
    ds.PixelData = ct_slice_pixels()
    return with_file_meta(ds)


@cache
def ct_slice_pixels() -> bytes:
    """512 x 512 values of 12 bits that compress as a CT slice does: air, a body with organs, bone, noise.

    (The codecs' speed and ratio depend on the content: a byte ramp or random bytes would mislead.)
    """
    import numpy as np  # only the benchmarks' CT needs it

    y, x = np.mgrid[-256:256, -256:256] / 256.0
    radius = np.hypot(x / 0.85, y / 0.65)
    hounsfield = np.where(radius < 1, 40.0, -1000.0)  # soft tissue in air
    hounsfield = np.where(np.hypot(x + 0.35, y) < 0.25, -850.0, hounsfield)  # lungs
    hounsfield = np.where(np.hypot(x - 0.35, y) < 0.25, -850.0, hounsfield)
    hounsfield = np.where(np.hypot(x, y - 0.45) < 0.1, 900.0, hounsfield)  # spine
    hounsfield += 25 * np.sin(7 * x) * np.cos(5 * y) * (radius < 1)
    hounsfield += np.random.default_rng(4711).normal(0, 12, hounsfield.shape)
    return bytes(np.clip(hounsfield + 1024, 0, 4095).astype("<u2").tobytes())


def build_multiframe(study_uid: str, size_bytes: int) -> Dataset:
    """A multi-frame instance of 512 x 512 x 16-bit frames, about `size_bytes` of pixel data."""
    frames = max(1, size_bytes // (512 * 512 * 2))
    ds = build_ct(study_uid, generate_uid(), 1, generate_uid())
    ds.SOPClassUID = MULTIFRAME_STORAGE
    ds.file_meta.MediaStorageSOPClassUID = UID(MULTIFRAME_STORAGE)
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(256)) * (frames * 512 * 512 * 2 // 256)
    return ds


def write_ct_series(directory: Path, count: int, study_uid: str | None = None) -> list[Path]:
    """`count` CT slices of one series written as Part 10 files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    study, series, frame = study_uid or generate_uid(), generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        paths.append(write_file(build_ct(study, series, number, frame), directory / f"ct{number:04d}.dcm"))
    return paths
