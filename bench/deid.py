"""Offline de-identification speed: instances/s of 0.5 MB CTs through the basic profile on one core.

Builds realistic CT instances with pydicom in a temporary folder (about 110 attributes: the patient, study,
series, equipment and image modules, a few sequences, two private blocks, 512 x 512 x 16-bit pixels), then
in one process times (CPU time) what the processor does for a de-identified copy: `dcmread` +
`Deidentifier.apply` + `encode_part10` (the processor's Part 10 writer) to memory, beside the same read + write
without de-identification and pydicom's own `dcmwrite`, in interleaved rounds.

    .venv/bin/python bench/deid.py [--instances 200] [--rounds 5] [--profile PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from karnak_processor.transcoding import encode_part10
from karnak_shared.deid import Deidentifier, hash_pseudonym, load_profile, parse_project_secret

BASIC_PROFILE = """\
name: "Dicom Basic Profile"
version: "1.0"
profileElements:
  - name: "DICOM basic profile"
    codename: "basic.dicom.profile"
"""
SECRET = parse_project_secret("5f0c2a33-9b1e-4d6a-8c21-0e7d4b9a1f35")


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
    ds.PixelData = bytes(range(256)) * (512 * 512 * 2 // 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200, help="CT instances to build and process")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over all instances (median kept)")
    parser.add_argument("--profile", type=Path, help="a profile YAML instead of the basic profile")
    args = parser.parse_args()

    profile = load_profile(args.profile if args.profile else BASIC_PROFILE)
    engine = Deidentifier.for_project(profile, "bench", SECRET)
    with tempfile.TemporaryDirectory() as folder:
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        paths = []
        for number in range(1, args.instances + 1):
            path = Path(folder) / f"ct{number:04d}.dcm"
            dcmwrite(path, build_ct(study, series, number, frame), enforce_file_format=True)
            paths.append(path)
        size = paths[0].stat().st_size
        attributes = len(dcmread(paths[0], stop_before_pixels=True))

        def run(deidentify: bool, pydicom_writer: bool = False) -> float:
            # CPU time of this process: other work on the machine does not count against the engine.
            start = time.process_time()
            for path in paths:
                ds = dcmread(path)
                if deidentify:
                    engine.apply(ds, hash_pseudonym(SECRET, str(ds.PatientID)))
                if pydicom_writer:
                    dcmwrite(BytesIO(), ds, enforce_file_format=True)
                else:
                    encode_part10(ds)
            return len(paths) / (time.process_time() - start)

        run(True)  # warm the caches (file system, profile plans)
        plain_rates, deid_rates, pydicom_rates = [], [], []
        for _ in range(args.rounds):  # interleaved, so all see the same machine
            plain_rates.append(run(False))
            deid_rates.append(run(True))
            pydicom_rates.append(run(True, pydicom_writer=True))
        plain, deid = statistics.median(plain_rates), statistics.median(deid_rates)
        with_dcmwrite = statistics.median(pydicom_rates)
    print(f"instance: {size / 1e6:.2f} MB, {attributes} attributes before pixel data; profile: {profile.name}")
    print(f"dcmread + encode_part10 only:                {plain:7.1f} instances/s")
    print(f"dcmread + de-identification + encode_part10: {deid:7.1f} instances/s (one core, median of {args.rounds})")
    print(f"  the same with pydicom's dcmwrite:          {with_dcmwrite:7.1f} instances/s")
    print(f"de-identification alone: {1000 / deid - 1000 / plain:.2f} ms per instance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
