"""End to end with debug logging: nothing identifying leaks, and a de-identification that fails sends nothing.

One study (CT, MR and an ultrasound whose JPEG pixel data cannot be decoded) goes through `karnak up` with
`logging.level: DEBUG` to four destinations:
- `research`: de-identified with the basic profile: gets every instance;
- `cardio-only`: a condition that is false: every instance rejected;
- `pixel-clean`: de-identified with a profile that cleans pixel data: the ultrasound cannot be cleaned, so
  it is parked for this destination alone and its PACS gets nothing for it, not even the original;
- `refusing`: a PACS that answers 0xA900: every instance fails and is parked by the dicom-sender.
Then no PatientName, PatientID, PatientBirthDate or AccessionNumber of the input may appear in any line of
the gateway's log, in any service's metrics, in the events or in the parked messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import JPEGBaseline8Bit
from pynetdicom import AE

from karnak_dicom.deid import parse_project_secret, uid_hash
from karnak_dicom.testing import (
    ACCESSION_NUMBER,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    StudyFiles,
    make_instance,
    make_study,
    with_jpeg_like_image,
    write_file,
)
from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.e2e.test_backbone import EventTap
from tests.support.servers import Gateway, ScriptedSCP, StoreSCP, free_port, storescu, wait_until

pytestmark = pytest.mark.e2e

PROFILES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
SECRETS = {"research": "0123456789abcdef0123456789abcdef", "pixels": "00112233-4455-6677-8899-aabbccddeeff"}
ULTRASOUND = "1.2.840.10008.5.1.4.1.1.6.1"
SERVICES = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier", "monitor")

# Every form an identifying value of the input could take in a line of text.
IDENTIFYING = (
    PATIENT_NAME,
    "DOE^JANE",
    "TESTPATIENT",
    PATIENT_ID,
    "4711-SECRET",
    PATIENT_BIRTH_DATE,
    "1961-02-03",
    ACCESSION_NUMBER,
    "99887766",
)


def leaks(text: str) -> list[str]:
    """The identifying values found in `text` (bounded, so digits inside a random UID do not count)."""
    return [v for v in IDENTIFYING if re.search(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])", text)]


@dataclass
class Run:
    gateway: Gateway
    study: StudyFiles
    ultrasound: str
    peers: dict[str, Any]
    events: EventTap

    def hashed(self, project: str, uid: str) -> str:
        return uid_hash(parse_project_secret(SECRETS[project]), uid)


def _ultrasound(directory: Path, study_uid: str) -> Path:
    """An ultrasound of the same patient whose JPEG stream is not JPEG: its pixels cannot be decoded."""
    ds = make_instance(ULTRASOUND, study_uid, "1.2.826.0.1.3680043.9.7433.3.1", 1, "US ECHO")
    ds.Modality = "US"
    ds.StationName = "ECHO-1"
    with_jpeg_like_image(ds, bytes(range(256)) * 4)
    return write_file(ds, directory / "us000.dcm", JPEGBaseline8Bit)


def _send_ultrasound(port: int, path: Path) -> None:
    # storescu proposes one JPEG process at a time: pynetdicom proposes the file's own syntax.
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ULTRASOUND, JPEGBaseline8Bit)
    assoc = ae.associate("127.0.0.1", port, ae_title="KARNAK-GW")
    assert assoc.is_established
    assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    assoc.release()


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("privacy")
    prefix = f"karnak-test-privacy-{free_port()}"
    peers: dict[str, Any] = {
        "research": StoreSCP("PACS_R", free_port(), workdir / "research").start(),
        "cardio-only": StoreSCP("PACS_C", free_port(), workdir / "cardio-only").start(),
        "pixel-clean": StoreSCP("PACS_P", free_port(), workdir / "pixel-clean").start(),
        "refusing": ScriptedSCP("PACS_NO", free_port(), status=0xA900).start(),
    }

    def destination(dest_id: str, ae: str, **extra: Any) -> dict[str, Any]:
        port = peers[dest_id].port
        return {"id": dest_id, "type": "dicom", "ae_title": ae, "hostname": "127.0.0.1", "port": port, **extra}

    destinations = [
        destination("research", "PACS_R", deidentification={"project": "research"}),
        destination(
            "cardio-only",
            "PACS_C",
            condition="tagValueContains(#Tag.StudyDescription, 'CARDIO')",
            deidentification={"project": "research"},
        ),
        destination("pixel-clean", "PACS_P", deidentification={"project": "pixels"}),
        destination("refusing", "PACS_NO"),
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    config["projects"] = [
        {"name": "research", "secret": SECRETS["research"], "profile": str(PROFILES / "profileByDefault.yml")},
        {"name": "pixels", "secret": SECRETS["pixels"], "profile": str(PROFILES / "profileByPixel.yml")},
    ]
    config["logging"] = {"level": "DEBUG"}
    config["metrics"]["ports"] = {service: free_port() for service in SERVICES}
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    study = make_study(workdir / "study", ct=3, mr=2, multiframe=0, large=0, compressed=0)
    us_path = _ultrasound(workdir / "study", study.study_uid)
    study = StudyFiles(study.study_uid, [*study.paths, us_path])
    try:
        gateway.start(timeout=60)
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths[:-1])
        assert sent.returncode == 0, sent.stderr
        _send_ultrasound(gateway.listener_port, us_path)
        ultrasound = str(dcmread(us_path, stop_before_pixels=True).SOPInstanceUID)
        result = Run(gateway, study, ultrasound, peers, tap)
        total = len(study.paths)
        wait_until(lambda: len(peers["research"].files()) >= total, 60, "the study at research")
        wait_until(lambda: len(tap.of("rejected", "cardio-only")) >= total, 30, "the rejections of cardio-only")
        wait_until(lambda: len(tap.of("failed", "refusing")) >= total, 30, "the failures at refusing")
        wait_until(
            lambda: len(tap.of("sent", "pixel-clean")) + len(tap.of("failed", "pixel-clean")) >= total,
            60,
            "every instance settled at pixel-clean",
        )
        yield result
    finally:
        gateway.stop()
        tap.close()
        for peer in peers.values():
            peer.stop()


def _received_uids(scp: StoreSCP) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.files()}


def test_the_deidentifying_destination_gets_every_instance_deidentified(run: Run) -> None:
    expected = {run.hashed("research", uid) for uid in run.study.by_sop_instance()}
    assert _received_uids(run.peers["research"]) == expected
    for path in run.peers["research"].files():
        assert leaks(path.read_bytes().decode("latin-1")) == []


def test_an_instance_whose_deidentification_fails_is_parked_for_that_destination_and_never_sent(run: Run) -> None:
    others = {uid for uid in run.study.by_sop_instance() if uid != run.ultrasound}
    # The other instances went through the same destination, cleaned of identifying attributes...
    assert _received_uids(run.peers["pixel-clean"]) == {run.hashed("pixels", uid) for uid in others}
    # ...but nothing at all reached its PACS for the ultrasound: no copy, and not the original either.
    for path in run.peers["pixel-clean"].files():
        ds = dcmread(path, stop_before_pixels=True)
        assert ds.Modality != "US" and ds.SOPClassUID != ULTRASOUND
    [failed] = run.events.of("failed", "pixel-clean")
    assert failed["sop_instance_uid"] == run.hashed("pixels", run.ultrasound)
    assert failed["reason"].startswith("cannot make the copy for destination pixel-clean: cannot decode the pixel data")
    parked = json.loads(run.gateway.karnak("dead", "list", "--json").stdout)
    [entry] = [p for p in parked if p["destination"] == "pixel-clean"]
    assert entry["sop_instance_uid"] == run.ultrasound
    assert entry["reason"] == failed["reason"]
    # The ultrasound went to the basic-profile destination, which does not touch pixels.
    assert run.hashed("research", run.ultrasound) in _received_uids(run.peers["research"])


def test_the_rejected_and_the_refusing_destinations_got_nothing_and_said_why(run: Run) -> None:
    assert run.peers["cardio-only"].files() == []
    assert run.peers["refusing"].received == []
    assert {e["reason"] for e in run.events.of("rejected", "cardio-only")} == {
        "Condition of destination cardio-only is not met: tagValueContains(#Tag.StudyDescription, 'CARDIO')"
    }
    for event in run.events.of("failed", "refusing"):
        assert "answered 0xA900" in event["reason"]


def test_debug_logging_was_on_and_no_log_line_holds_a_patient_value(run: Run) -> None:
    log = run.gateway.log()
    assert "level=debug" in log
    # Every service logged something, so every service's lines were checked.
    for service in SERVICES:
        assert f"service={service}" in log, f"no line of {service} in the log"
    found = {line: leaks(line) for line in log.splitlines() if leaks(line)}
    assert found == {}


@pytest.mark.parametrize("service", SERVICES)
def test_no_metric_of_any_service_holds_a_patient_value(run: Run, service: str) -> None:
    metrics = run.gateway.metrics(service)
    assert "karnak_" in metrics
    assert leaks(metrics) == []


def test_no_event_and_no_parked_message_holds_a_patient_value(run: Run) -> None:
    # The plain `refusing` destination's events may show its display values (they are for its emails);
    # everything else that an operator or a log shipper sees must be free of them.
    # The original PatientID and AccessionNumber travel in events to the monitor (DESIGN.md section 16),
    # in `origin.patient_id` and `origin.accession_number`, and nowhere else.
    for event in run.events.events:
        origin = dict(event.get("origin") or {})
        for field in ("patient_id", "accession_number"):
            origin.pop(field, None)
        if event["routing_key"] != "transfer.failed.refusing":
            assert leaks(json.dumps({**event, "origin": origin})) == [], event
        assert leaks(event.get("reason") or "") == [], event
    for event in run.events.events:
        origin = event.get("origin") or {}
        assert origin.get("patient_id") == PATIENT_ID, event  # the monitor's copy (original_identifiers)
    parked = run.gateway.karnak("dead", "list", "--json")
    assert parked.returncode == 0, parked.stderr
    assert leaks(parked.stdout) == []


def test_the_original_identifiers_land_only_in_their_monitoring_columns(run: Run) -> None:
    """The monitor keeps the original PatientID and AccessionNumber (monitoring.original_identifiers, the
    default) in `patient_id` and `accession_number` of its series rows, and nowhere else in its tables."""
    from sqlalchemy import create_engine, text

    engine = create_engine(run.gateway.config["database"]["url"])
    total = len(run.study.paths)

    def recorded() -> int:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT COALESCE(SUM(instances), 0) FROM transfer_series")).scalar_one())

    try:
        # research, cardio-only, pixel-clean and refusing each account for every instance.
        wait_until(lambda: recorded() >= 4 * total, 60, "the monitor recorded every instance")
        with engine.connect() as connection:
            series = [dict(r._mapping) for r in connection.execute(text("SELECT * FROM transfer_series"))]
            others = [
                dict(r._mapping)
                for table in ("transfer_reasons", "transfer_instances", "monitor_events")
                for r in connection.execute(text(f"SELECT * FROM {table}"))
            ]
    finally:
        engine.dispose()
    for row in series:
        assert (row["patient_id"], row["accession_number"]) == (PATIENT_ID, ACCESSION_NUMBER), row
        rest = {k: v for k, v in row.items() if k not in ("patient_id", "accession_number")}
        if row["destination"] != "refusing":  # sent as it is: its values as sent are the originals
            assert leaks(json.dumps(rest, default=str)) == [], row
    # What a viewer sees for the de-identifying destination: the PatientID it was sent (the pseudonym's hash).
    assert {r["patient_id_sent"] for r in series if r["destination"] == "research"} - {"", PATIENT_ID}
    assert leaks(json.dumps(others, default=str)) == []
