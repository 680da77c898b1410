"""Synthetic DICOM studies for the tests, written with pydicom (no numpy needed)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

PATIENT_NAME = "DOE^JANE^TESTPATIENT"
PATIENT_ID = "PID-4711-SECRET"
PATIENT_BIRTH_DATE = "19610203"
ACCESSION_NUMBER = "ACC-99887766"


@dataclass(frozen=True)
class StudyFiles:
    study_uid: str
    paths: list[Path]

    def by_sop_instance(self) -> dict[str, Path]:
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in self.paths}


def _base(sop_class: str, study_uid: str, series_uid: str, number: int, description: str) -> Dataset:
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
    ds.Modality = {CTImageStorage: "CT", MRImageStorage: "MR"}.get(sop_class, "OT")
    return ds


def _image(ds: Dataset, rows: int, columns: int, frames: int = 1, seed: int = 0) -> None:
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


def _jpeg_like_image(ds: Dataset, body: bytes) -> None:
    """A 64 x 64 8-bit image whose one encapsulated fragment is `body` between JPEG's start and end markers."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([b"\xff\xd8" + body + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"


def _write(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    file_meta = Dataset()
    file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = file_meta
    ds.save_as(path, enforce_file_format=True)
    return path


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
        ds = _base(CTImageStorage, study, ct_series, i + 1, "CT AXIAL")
        _image(ds, 512, 512)
        paths.append(_write(ds, directory / f"ct{i:03d}.dcm"))
    for i in range(mr):
        ds = _base(MRImageStorage, study, mr_series, i + 1, "MR T1")
        _image(ds, 64, 64)
        paths.append(_write(ds, directory / f"mr{i:03d}.dcm"))
    for i in range(multiframe):
        ds = _base(MultiFrameGrayscaleWordSecondaryCaptureImageStorage, study, mf_series, i + 1, "MULTIFRAME")
        _image(ds, 256, 256, frames=12)
        paths.append(_write(ds, directory / f"mf{i:03d}.dcm"))
    for i in range(large):
        ds = _base(CTImageStorage, study, ct_series, ct + i + 1, "CT AXIAL")
        _image(ds, 1024, 1024)
        paths.append(_write(ds, directory / f"large{i:03d}.dcm"))
    for i in range(compressed):
        ds = _base(SecondaryCaptureImageStorage, study, sc_series, i + 1, "SC JPEG")
        # The gateway never decodes pixel data, so an opaque fragment stands in for a JPEG stream.
        _jpeg_like_image(ds, os.urandom(2000))
        paths.append(_write(ds, directory / f"sc{i:03d}.dcm", JPEGLosslessSV1))
    return StudyFiles(study, paths)


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group: what must arrive unchanged."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        return data
    # Group 0002 is explicit VR little endian; its length is in (0002,0000).
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def bundled_test_files() -> list[Path]:
    """The DICOM files pydicom ships (its test files), without the ones it would try to download."""
    from pydicom.data.data_manager import DATA_ROOT

    return sorted(Path(DATA_ROOT, "test_files").glob("*.dcm"))
