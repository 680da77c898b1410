"""End to end: storescu -> gateway (`karnak up`, three processes, RabbitMQ) -> storescp and other peers.

One study of 55 instances (CT, MR, a multi-frame, a 2 MB CT, a JPEG-compressed secondary capture) is
sent once per module; each test checks one promise of the backbone against what the peers received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from pydicom.uid import CTImageStorage

from karnak_dicom.testing import StudyFiles, dataset_bytes, make_study
from karnak_shared.config import parse_config
from tests.conftest import gateway_config, register_topology
from tests.support.servers import (
    Gateway,
    ScriptedSCP,
    StoreSCP,
    free_port,
    metric_value,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.e2e


class EventTap:
    """A queue of the test bound to every `transfer.*` event of the gateway."""

    def __init__(self, url: str, exchange: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = self._connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, exchange, routing_key="transfer.#")
        channel.basic_consume(queue, self._on_event, auto_ack=True)
        self._channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_event(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.events.append({"routing_key": method.routing_key, **json.loads(body)})

    def _run(self) -> None:
        while not self._stop.is_set():
            self._connection.process_data_events(time_limit=0.2)

    def of(self, kind: str, destination: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["routing_key"] == f"transfer.{kind}.{destination}"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._connection.close()


@dataclass
class Run:
    gateway: Gateway
    study: StudyFiles
    peers: dict[str, Any]
    events: EventTap
    send_output: str
    send_returncode: int
    flaky_port: int
    workdir: Path


def _dicom_destination(dest_id: str, ae: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"id": dest_id, "type": "dicom", "ae_title": ae, "hostname": "127.0.0.1", "port": port, **extra}


@pytest.fixture(scope="module")
def run(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("backbone")
    prefix = f"karnak-test-e2e-{workdir.name[-6:]}-{free_port()}"
    peers: dict[str, Any] = {
        "pacs-a": StoreSCP("PACS_A", free_port(), workdir / "pacs-a").start(),
        "pacs-b": StoreSCP("PACS_B", free_port(), workdir / "pacs-b").start(),
        "disabled": StoreSCP("PACS_OFF", free_port(), workdir / "disabled").start(),
        "ct-only": StoreSCP("PACS_CT", free_port(), workdir / "ct-only").start(),
        "refusing": ScriptedSCP("PACS_NO", free_port(), status=0xA900).start(),
    }
    flaky_port = free_port()  # nothing listens here until the test says so
    destinations = [
        _dicom_destination("pacs-a", "PACS_A", peers["pacs-a"].port),
        _dicom_destination("pacs-b", "PACS_B", peers["pacs-b"].port),
        _dicom_destination("disabled", "PACS_OFF", peers["disabled"].port, enabled=False),
        _dicom_destination("ct-only", "PACS_CT", peers["ct-only"].port, authorized_sop_classes=[str(CTImageStorage)]),
        _dicom_destination("flaky", "PACS_FLAKY", flaky_port),
        _dicom_destination("refusing", "PACS_NO", peers["refusing"].port),
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    config["broker"]["retry_delays"] = [1, 2, 3, 5, 10, 20]
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    tap = EventTap(amqp_url, f"{prefix}.events")
    study = make_study(workdir / "study")
    try:
        gateway.start()
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        yield Run(gateway, study, peers, tap, sent.stdout + sent.stderr, sent.returncode, flaky_port, workdir)
    finally:
        gateway.stop()
        tap.close()
        for peer in peers.values():
            peer.stop()


def _received(scp: StoreSCP) -> dict[str, Path]:
    from pydicom import dcmread

    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in scp.files()}


def test_storescu_sends_the_whole_study_successfully(run: Run) -> None:
    assert len(run.study.paths) >= 50
    assert run.send_returncode == 0, run.send_output


@pytest.mark.parametrize("destination", ["pacs-a", "pacs-b"])
def test_every_instance_arrives_byte_identical_at_each_condition_free_destination(run: Run, destination: str) -> None:
    expected = run.study.by_sop_instance()
    scp = run.peers[destination]
    wait_until(lambda: len(scp.files()) >= len(expected), 60, f"{len(expected)} instances at {destination}")
    received = _received(scp)
    assert set(received) == set(expected)
    for uid, path in expected.items():
        assert dataset_bytes(received[uid]) == dataset_bytes(path), f"bytes of {uid} changed on the way"


def test_a_disabled_destination_receives_nothing_and_no_event(run: Run) -> None:
    wait_until(lambda: len(run.peers["pacs-a"].files()) >= len(run.study.paths), 60, "study delivered")
    assert run.peers["disabled"].files() == []
    assert [e for e in run.events.events if e["destination"] == "disabled"] == []


def test_a_sop_class_not_authorized_is_rejected_with_an_event_naming_it(run: Run) -> None:
    expected = run.study.by_sop_instance()
    ct_count = sum(1 for p in run.study.paths if p.name.startswith(("ct", "large")))
    others = len(expected) - ct_count
    wait_until(lambda: len(run.peers["ct-only"].files()) >= ct_count, 60, "CT instances at ct-only")
    wait_until(lambda: len(run.events.of("rejected", "ct-only")) >= others, 30, "rejection events")
    received = _received(run.peers["ct-only"])
    assert len(received) == ct_count
    rejected = run.events.of("rejected", "ct-only")
    assert len(rejected) == others
    assert {e["sop_instance_uid"] for e in rejected} | set(received) == set(expected)
    assert all("is not authorized for destination ct-only" in e["reason"] for e in rejected)


def test_a_destination_that_is_down_gets_everything_once_it_comes_back(run: Run) -> None:
    sender = run.gateway.metrics("dicom-sender")
    wait_until(
        lambda: (
            metric_value(
                run.gateway.metrics("dicom-sender"),
                "karnak_instances_sent_total",
                destination="flaky",
                outcome="retried",
            )
            > 0
        ),
        30,
        "retries scheduled for the down destination",
    )
    assert metric_value(sender, "karnak_instances_sent_total", destination="flaky", outcome="sent") == 0
    scp = StoreSCP("PACS_FLAKY", run.flaky_port, run.workdir / "flaky").start()
    try:
        expected = run.study.by_sop_instance()
        wait_until(lambda: len(scp.files()) >= len(expected), 90, "delivery after the destination came back")
        assert set(_received(scp)) == set(expected)
        assert run.events.of("failed", "flaky") == []
    finally:
        scp.stop()


def test_a_permanent_refusal_is_parked_with_its_reason_and_replay_delivers_it(run: Run) -> None:
    expected = run.study.by_sop_instance()
    refusing: ScriptedSCP = run.peers["refusing"]
    wait_until(lambda: len(run.events.of("failed", "refusing")) >= len(expected), 60, "failed events")
    listing = run.gateway.karnak("dead", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    parked = [p for p in json.loads(listing.stdout) if p["destination"] == "refusing"]
    assert len(parked) == len(expected)
    assert all("0xA900" in p["reason"] for p in parked)
    assert refusing.received == []

    refusing.status = 0x0000  # the PACS is fixed
    replay = run.gateway.karnak("dead", "replay", "--destination", "refusing")
    assert replay.returncode == 0, replay.stderr
    assert f"replayed {len(expected)}" in replay.stdout
    wait_until(lambda: len(refusing.received) >= len(expected), 60, "replayed instances delivered")
    assert set(refusing.received) == set(expected)
    after = json.loads(run.gateway.karnak("dead", "list", "--json").stdout)
    assert [p for p in after if p["destination"] == "refusing"] == []


def test_an_unknown_called_ae_title_is_rejected(run: Run) -> None:
    result = storescu(run.gateway.listener_port, "NOT-A-NODE", "CT01", run.study.paths[:1])
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stdout + result.stderr


def test_a_calling_ae_title_that_is_not_a_source_is_rejected(run: Run) -> None:
    result = storescu(run.gateway.listener_port, "KARNAK-GW", "INTRUDER", run.study.paths[:1])
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr


def test_counters_moved_on_every_service(run: Run) -> None:
    wait_until(lambda: len(run.peers["pacs-b"].files()) >= len(run.study.paths), 60, "study delivered")
    count = len(run.study.paths)
    receiver = run.gateway.metrics("receiver")
    processor = run.gateway.metrics("processor")
    sender = run.gateway.metrics("dicom-sender")
    assert metric_value(receiver, "karnak_instances_received_total", outcome="accepted") >= count
    assert metric_value(processor, "karnak_instances_routed_total", destination="pacs-a", outcome="queued") >= count
    assert metric_value(processor, "karnak_instances_routed_total", destination="disabled", outcome="disabled") >= count
    assert metric_value(sender, "karnak_instances_sent_total", destination="pacs-b", outcome="sent") >= count
    assert metric_value(sender, "karnak_instance_transit_seconds_count", destination="pacs-b") >= count
    assert metric_value(receiver, "karnak_broker_connected", service="receiver") == 1
