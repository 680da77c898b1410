"""End to end through RabbitMQ: one study, two destinations with different projects, one whose condition fails.

The expected pseudonyms and UIDs are computed here with `hmac`/`hashlib`, independently of the engine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from karnak_dicom.testing import (
    ACCESSION_NUMBER,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    StudyFiles,
    make_study,
)
from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.servers import Gateway, StoreSCP, free_port, storescu, wait_until

pytestmark = pytest.mark.e2e

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
SECRETS = {"study-a": "0123456789abcdef0123456789abcdef", "study-b": "fedcba98-7654-3210-fedc-ba9876543210"}


def _key(project: str) -> bytes:
    return bytes.fromhex(SECRETS[project].replace("-", ""))


def _hmac(project: str, value: str) -> bytes:
    return hmac.new(_key(project), value.encode("ascii"), hashlib.sha256).digest()


def expected_pseudonym(project: str) -> str:
    return _hmac(project, PATIENT_ID)[:8].hex().upper()


def expected_patient_id(project: str) -> str:
    return format(int.from_bytes(_hmac(project, expected_pseudonym(project))[:16], "big"), "X")


def expected_uid(project: str, uid: str) -> str:
    digest = bytearray(_hmac(project, uid)[:16])
    digest[6] = digest[6] & 0x0F | 0x40
    digest[8] = digest[8] & 0x3F | 0x80
    return "2.25." + str(int.from_bytes(digest, "big"))


@dataclass
class Run:
    study: StudyFiles
    peers: dict[str, StoreSCP]
    events: EventTap
    gateway: Gateway


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("deid")
    prefix = f"karnak-test-deid-{free_port()}"
    peers = {
        name: StoreSCP(ae, free_port(), workdir / name).start()
        for name, ae in (("deid-a", "PACS_A"), ("deid-b", "PACS_B"), ("cardio-only", "PACS_C"))
    }

    def destination(dest_id: str, ae: str, **extra: Any) -> dict[str, Any]:
        port = peers[dest_id].port
        return {"id": dest_id, "type": "dicom", "ae_title": ae, "hostname": "127.0.0.1", "port": port, **extra}

    destinations = [
        destination("deid-a", "PACS_A", deidentification={"project": "study-a"}),
        destination("deid-b", "PACS_B", deidentification={"project": "study-b"}),
        destination(
            "cardio-only",
            "PACS_C",
            condition="tagValueContains(#Tag.StudyDescription, 'CARDIO')",
            deidentification={"project": "study-a"},
        ),
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    config["projects"] = [{"name": name, "secret": secret, "profile": str(PROFILE)} for name, secret in SECRETS.items()]
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    study = make_study(workdir / "study", ct=6, mr=4, multiframe=1, large=0, compressed=0)
    try:
        gateway.start()
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        assert sent.returncode == 0, sent.stderr
        yield Run(study, peers, tap, gateway)
    finally:
        gateway.stop()
        tap.close()
        for peer in peers.values():
            peer.stop()


def _arrived(run: Run, destination: str) -> list[Path]:
    scp = run.peers[destination]
    wait_until(lambda: len(scp.files()) >= len(run.study.paths), 60, f"the study at {destination}")
    return scp.files()


@pytest.mark.parametrize("destination,project", [("deid-a", "study-a"), ("deid-b", "study-b")])
def test_each_project_gets_its_own_consistent_pseudonymised_copy(run: Run, destination: str, project: str) -> None:
    files = _arrived(run, destination)
    originals = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in run.study.paths}
    study_uid = dcmread(run.study.paths[0], stop_before_pixels=True).StudyInstanceUID
    expected_sops = {expected_uid(project, uid) for uid in originals}
    received = [dcmread(p) for p in files]
    assert {str(ds.SOPInstanceUID) for ds in received} == expected_sops
    for ds in received:
        assert str(ds.PatientName) == expected_pseudonym(project)
        assert ds.PatientID == expected_patient_id(project)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == expected_uid(project, study_uid)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.ClinicalTrialSponsorName == project


def test_the_two_projects_copies_share_no_identifier(run: Run) -> None:
    a = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in _arrived(run, "deid-a")}
    b = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in _arrived(run, "deid-b")}
    assert a.isdisjoint(b)


@pytest.mark.parametrize("destination", ["deid-a", "deid-b"])
def test_nothing_identifying_survives_anywhere_in_the_files(run: Run, destination: str) -> None:
    study_uid = str(dcmread(run.study.paths[0], stop_before_pixels=True).StudyInstanceUID)
    for path in _arrived(run, destination):
        data = path.read_bytes()
        for value in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, ACCESSION_NUMBER, study_uid):
            assert value.encode() not in data, f"{value} found in {path.name}"


def test_a_false_condition_sends_nothing_and_reports_the_reason_without_patient_data(run: Run) -> None:
    _arrived(run, "deid-a")
    wait_until(lambda: len(run.events.of("rejected", "cardio-only")) >= len(run.study.paths), 30, "rejections")
    assert run.peers["cardio-only"].files() == []
    for event in run.events.of("rejected", "cardio-only"):
        assert "Condition of destination cardio-only is not met" in event["reason"]
        # A de-identifying destination's events carry no original value.
        assert event["display"] == {}
        text = json.dumps(_without_monitor_copy(event))
        for value in (PATIENT_NAME, PATIENT_ID, "RESEARCH BRAIN"):
            assert value not in text


def test_sent_events_carry_the_deidentified_values(run: Run) -> None:
    _arrived(run, "deid-a")
    wait_until(lambda: len(run.events.of("sent", "deid-a")) >= len(run.study.paths), 30, "sent events")
    for event in run.events.of("sent", "deid-a"):
        assert event["display"].get("PatientID") == expected_patient_id("study-a")
        assert PATIENT_ID not in json.dumps(_without_monitor_copy(event))
        assert event["origin"]["patient_id"] == PATIENT_ID  # for the monitor only (original_identifiers)


def _without_monitor_copy(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its `origin`: the original identifiers and descriptions it carries for the
    monitor only (DESIGN section 16: they travel on the broker and land in the monitoring tables, never in
    a log, an email or a parked message's reason)."""
    return {key: value for key, value in event.items() if key != "origin"}
