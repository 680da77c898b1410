"""What the benchmarks give the gateway: realistic instances, the DICOM basic profile and a project secret.

The instances (a scanner's 0.5 MB CT slice, a large multi-frame) carry what a modality writes (patient,
study, series, equipment and image modules, sequences, private blocks), so that de-identification has its
real work to do.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from karnak_dicom.deid import parse_project_secret

MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture
BASIC_PROFILE = """\
name: "Dicom Basic Profile"
version: "1.0"
profileElements:
  - name: "DICOM basic profile"
    codename: "basic.dicom.profile"
"""
SECRET_TEXT = "5f0c2a33-9b1e-4d6a-8c21-0e7d4b9a1f35"
SECRET = parse_project_secret(SECRET_TEXT)


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
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


@cache
def ct_slice_pixels() -> bytes:
    """512 x 512 values of 12 bits that compress as a CT slice does: air, a body with organs, bone, noise.

    (The codecs' speed and ratio depend on the content: a byte ramp or random bytes would mislead.)
    """
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
    ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_STORAGE
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(range(256)) * (frames * 512 * 512 * 2 // 256)
    return ds


def write_study(directory: Path, count: int, study_uid: str | None = None) -> list[Path]:
    """`count` CT slices of one series written as Part 10 files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    study, series, frame = study_uid or generate_uid(), generate_uid(), generate_uid()
    paths = []
    for number in range(1, count + 1):
        path = directory / f"ct{number:04d}.dcm"
        dcmwrite(path, build_ct(study, series, number, frame), enforce_file_format=True)
        paths.append(path)
    return paths
