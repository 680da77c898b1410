"""The receiver's own checks of a C-STORE: a dataset it cannot route is answered with an error and a reason."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from karnak_dicom.testing import dataset_bytes, make_study
from karnak_receiver.checks import STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_DOES_NOT_MATCH, check_dataset
from tests.receiver.conftest import ReceiverProcess
from tests.support.servers import dcmtk_env, dcmtk_tool


def _study(directory: Path, count: int = 3) -> list[Path]:
    return make_study(directory, ct=count, mr=0, multiframe=0, large=0, compressed=0).paths


def _without(path: Path, keyword: str) -> Path:
    ds = dcmread(path)
    delattr(ds, keyword)
    ds.save_as(path)
    return path


def test_storescu_gets_a_failure_with_the_reason_for_an_instance_lacking_its_series_and_sends_the_next_ones(
    start_receiver: Callable[..., ReceiverProcess], tmp_path: Path
) -> None:
    receiver = start_receiver()
    files = _study(tmp_path / "study", 4)
    broken = _without(files[1], "SeriesInstanceUID")
    command = [dcmtk_tool("storescu"), "-d", "-nh", "-aet", "CT01", "-aec", "KARNAK-GW", "127.0.0.1"]
    sent = subprocess.run(
        [*command, str(receiver.port), *map(str, files)], env=dcmtk_env(), capture_output=True, text=True, timeout=120
    )
    output = sent.stdout + sent.stderr
    statuses = [line.split(":", 2)[2].strip() for line in output.splitlines() if "DIMSE Status" in line]
    assert statuses == ["0x0000: Success", "0xa900: Error: Data Set does not match SOP Class"] + 2 * ["0x0000: Success"]
    assert "(0000,0902) LO [dataset lacks SeriesInstanceUID]" in output, output
    # One association for all four: the failure did not end it.
    assert output.count("Association Accepted") == 1, output
    receiver.wait_for_log("c-store.refused")
    uid = str(dcmread(broken, stop_before_pixels=True).SOPInstanceUID)
    [line] = [x for x in receiver.log().splitlines() if "c-store.refused" in x]
    assert f"sop_instance_uid={uid}" in line and "status=0xA900" in line
    assert receiver.log().count("c-store.accepted") == 3


def test_a_dataset_whose_sop_instance_differs_from_its_request_is_refused(tmp_path: Path) -> None:
    [path] = _study(tmp_path, 1)
    ds = dcmread(path, stop_before_pixels=True)
    refusal = check_dataset(dataset_bytes(path), ExplicitVRLittleEndian, str(ds.SOPClassUID), generate_uid())
    assert refusal is not None
    assert refusal.status == STATUS_DATASET_DOES_NOT_MATCH
    assert refusal.reason == "dataset SOPInstanceUID differs from the C-STORE request"
    assert str(ds.SOPInstanceUID) in refusal.detail


def test_a_whole_instance_passes_the_checks_in_either_little_endian_syntax(tmp_path: Path) -> None:
    [path] = _study(tmp_path, 1)
    ds = dcmread(path)
    assert check_dataset(dataset_bytes(path), ExplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID) is None
    implicit = tmp_path / "implicit.dcm"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(implicit, enforce_file_format=True)
    assert check_dataset(dataset_bytes(implicit), ImplicitVRLittleEndian, ds.SOPClassUID, ds.SOPInstanceUID) is None


def test_a_header_that_cannot_be_walked_is_answered_cannot_understand() -> None:
    # (0008,0016) UI with a length running past the end of the data.
    header = b"\x08\x00\x16\x00UI\xff\x7f1.2"
    refusal = check_dataset(header, ExplicitVRLittleEndian, "1.2", "1.2.3")
    assert refusal is not None and refusal.status in (STATUS_CANNOT_UNDERSTAND, STATUS_DATASET_DOES_NOT_MATCH)
