"""The dicom-sender on the runtime, in-process against the real RabbitMQ and DCMTK's storescp.

What issue 18 found: a forged message published straight to a send queue reached the PACS; a non-DICOM
body crashed the handler 20 times; a missing blob was acked as a duplicate. Each is now parked once, with
its own cause, and nothing reaches the PACS.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_dicom_sender.sender import DicomSenderService
from karnak_shared import header_names
from karnak_shared.config import parse_config
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.service import ServiceRunner
from karnak_shared.service.testing import instance_message, wait_for
from karnak_shared.service.testing.servers import ScriptedSCP
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.fixtures import make_part10
from tests.support.servers import StoreSCP, free_port

pytestmark = pytest.mark.integration


@dataclass
class Sending:
    runner: ServiceRunner[Any]
    topology: Topology
    channel: Any
    pacs: StoreSCP

    @property
    def queue(self) -> str:
        return self.topology.send_queue("dicom", "pacs")

    def publish(self, headers: dict[str, Any], body: bytes) -> None:
        self.channel.basic_publish(
            self.topology.send_exchange, self.queue, body, pika.BasicProperties(headers=headers, delivery_mode=2)
        )

    def parked(self) -> list[dict[str, Any]]:
        out = []
        while True:
            method, properties, _ = self.channel.basic_get(self.topology.dead_queue, auto_ack=True)
            if method is None:
                return out
            out.append(dict(properties.headers or {}))

    def events(self) -> list[TransferEvent]:
        out = []
        while True:
            method, _, body = self.channel.basic_get(self.events_queue, auto_ack=True)
            if method is None:
                return out
            out.append(TransferEvent.from_body(body))

    events_queue: str = ""


@pytest.fixture
def sending(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Sending]:
    pacs = StoreSCP("PACS", free_port(), tmp_path / "pacs").start()
    raw = gateway_config(
        amqp_url,
        prefix,
        tmp_path,
        [{"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": pacs.port}],
    )
    config = parse_config(json.dumps(raw))
    topology = register_topology(amqp_url, config)
    runner = ServiceRunner(DicomSenderService(), config, metrics_port=0).start()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    topology.declare(channel)
    events = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(events, topology.events_exchange, routing_key="transfer.#")
    try:
        wait_for(lambda: runner.connected, 15)
        yield Sending(runner, topology, channel, pacs, events)
    finally:
        runner.stop()
        connection.close()
        pacs.stop()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parked_once(sending: Sending, cause: str) -> dict[str, Any]:
    started = time.monotonic()
    found: list[dict[str, Any]] = []
    wait_for(lambda: found.extend(sending.parked()) or found, 5)
    assert time.monotonic() - started < 1.0
    time.sleep(0.5)
    found.extend(sending.parked())
    (parked,) = found
    assert _text(parked[header_names.CAUSE]) == cause
    assert sending.pacs.files() == []
    return parked


def test_a_signed_instance_is_stored_at_the_pacs_and_its_sent_event_follows(sending: Sending) -> None:
    message = instance_message(make_part10(), signer=sending.runner.providers.signer, destination="pacs")
    sending.publish(message.headers, message.body)

    wait_for(lambda: sending.pacs.files(), 15)
    events = wait_for(lambda: sending.events(), 5)
    assert [e.kind for e in events] == ["sent"]
    assert sending.parked() == []


def test_a_forged_send_message_is_parked_unauthenticated_and_never_reaches_the_pacs(sending: Sending) -> None:
    # Right queue, plausible headers, a valid instance: only the signature is missing.
    forged = instance_message(make_part10(), destination="pacs")
    sending.publish(forged.headers, forged.body)

    parked = _parked_once(sending, "unauthenticated")
    assert Envelope.from_headers(parked).destination == "pacs"


def test_a_non_dicom_body_on_a_send_queue_is_parked_at_once_not_crashed_on(sending: Sending) -> None:
    message = instance_message(b"%PDF-1.7 not an image", signer=sending.runner.providers.signer, destination="pacs")
    sending.publish(message.headers, message.body)

    _parked_once(sending, "not-dicom")


def test_a_well_formed_reference_to_a_missing_blob_is_parked_missing_blob_not_acked_as_a_duplicate(
    sending: Sending,
) -> None:
    blobs = sending.runner.providers.blobs
    message = instance_message(make_part10(), signer=sending.runner.providers.signer, blobs=blobs, destination="pacs")
    blobs.delete(str(Envelope.from_headers(message.headers).blob))
    sending.publish(message.headers, message.body)

    _parked_once(sending, "missing-blob")


@dataclass
class Runtime:
    runner: ServiceRunner[Any]
    topology: Topology
    channel: Any
    events_queue: str

    def send(self) -> None:
        message = instance_message(make_part10(), signer=self.runner.providers.signer, destination="pacs")
        self.channel.basic_publish(
            self.topology.send_exchange,
            self.topology.send_queue("dicom", "pacs"),
            message.body,
            pika.BasicProperties(headers=message.headers, delivery_mode=2),
        )

    def events(self) -> list[TransferEvent]:
        return Sending.events(self)  # type: ignore[arg-type]


@pytest.fixture
def sender_to(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Any]:
    """A dicom-sender whose destination `pacs` is at the port given."""
    started: list[tuple[ServiceRunner[Any], Any]] = []

    def start(port: int) -> Runtime:
        raw = gateway_config(
            amqp_url,
            prefix,
            tmp_path,
            [{"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": port}],
        )
        raw["broker"]["retry_delays"] = [1, 2]
        config = parse_config(json.dumps(raw))
        topology = register_topology(amqp_url, config)
        runner = ServiceRunner(DicomSenderService(), config, metrics_port=0).start()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        started.append((runner, connection))
        channel = connection.channel()
        topology.declare(channel)
        events = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(events, topology.events_exchange, routing_key="transfer.#")
        wait_for(lambda: runner.connected, 15)
        return Runtime(runner, topology, channel, events)

    yield start
    for runner, connection in started:
        runner.stop()
        connection.close()


def test_each_retry_of_a_destination_that_is_down_is_reported_as_a_retried_event_with_its_reason(
    sender_to: Any,
) -> None:
    runtime: Runtime = sender_to(free_port())  # nothing listens there
    runtime.send()
    found: list[TransferEvent] = []
    wait_for(lambda: found.extend(runtime.events()) or any(e.kind == "failed" for e in found), 30)
    kinds = [e.kind for e in found]
    # Two delay tiers: two retries, then the transfer is given up (parked) and reported failed.
    assert kinds == ["retried", "retried", "failed"]
    assert [e.attempt for e in found] == [0, 1, 2]
    assert all(e.reason for e in found)
    assert "127.0.0.1" in (found[0].reason or "")
    assert (found[-1].reason or "").startswith("gave up after 3 attempts")


def test_a_warning_status_is_a_sent_event_whose_reason_is_the_warning(sender_to: Any) -> None:
    pacs = ScriptedSCP("PACS", free_port(), status=0xB000).start()
    try:
        runtime: Runtime = sender_to(pacs.port)
        runtime.send()
        events = wait_for(lambda: runtime.events(), 15)
    finally:
        pacs.stop()
    assert [(e.kind, e.reason) for e in events] == [
        ("sent", "stored with warning status 0xB000 (Coercion of data elements)")
    ]
