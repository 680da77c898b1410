"""The service runtime's contract, against the real RabbitMQ: acks, confirms, blobs, outcomes, poison messages.

A small service consumes one send queue; what its handler does is said by the message itself (the
envelope's `calling_ae`), so each test states its case in the message it publishes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_shared import header_names
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.service import Ack, InstanceMessage, Outcome, Park, Providers, Requeue, Retry, Service, Work, consume
from karnak_shared.service.runner import ServiceRunner
from karnak_shared.service.testing import instance_envelope, instance_message, signed, wait_for
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology

pytestmark = pytest.mark.integration

KEY = "cd" * 32
PART10 = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00" * 64


@dataclass
class Behaviour:
    """What the test service saw, and a gate a test can hold a handler on."""

    seen: list[tuple[str, str, int]] = field(default_factory=list)  # (action, sop instance uid, attempt)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ContractService(Service[Behaviour]):
    """Does what each message asks: ack, retry, park, requeue, crash, publish somewhere..."""

    name = "contract"

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    def configure(self, config: GatewayConfig, providers: Providers) -> Behaviour:
        return self.behaviour

    @consume(lambda config, topology: list(topology.send_queues), message=InstanceMessage, workers=1)
    def handle(self, message: InstanceMessage, work: Work[Behaviour]) -> Outcome:
        action = message.envelope.calling_ae
        uid = message.envelope.sop_instance_uid
        count = sum(1 for _, seen_uid, _ in work.state.seen if seen_uid == uid)
        with work.state.lock:
            work.state.seen.append((action, uid, message.attempt))
        topology = work.topology
        if action == "ack":
            return Ack()
        if action == "retry":
            return Retry("the destination is busy") if message.attempt == 0 else Ack()
        if action == "retry-always":
            return Retry("the destination is still busy")
        if action == "park":
            return Park("the destination refused it", "refused")
        if action == "requeue-once":
            return Requeue("not now") if count == 0 else Ack()
        if action == "crash-once":
            if count == 0:
                raise RuntimeError("first time unlucky")
            return Ack()
        if action == "crash":
            raise ValueError("cannot use value 'Doe^John' here")
        if action == "publish-two":
            for n in range(2):
                work.publish(topology.ingest_exchange, topology.received_queue, PART10, {"karnak-n": str(n)})
            return Ack()
        if action == "publish-unroutable-once":
            # The first time to nowhere (refused as unroutable), then to the received queue (not consumed here).
            target = topology.received_queue if count else f"{topology.prefix}.nowhere"
            work.publish(topology.ingest_exchange, target, PART10, {"karnak-n": "0"})
            return Ack()
        if action == "slow":
            time.sleep(1.0)
            return Ack()
        raise AssertionError(f"unknown action {action}")


def _destinations(*ids: str) -> list[dict[str, Any]]:
    return [{"id": i, "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": 104} for i in ids]


def _config(amqp_url: str, prefix: str, tmp_path: Path, *ids: str, key: str | None = KEY) -> GatewayConfig:
    config = gateway_config(amqp_url, prefix, tmp_path, _destinations(*ids))
    if key:
        config["secrets"] = {"key": key}
    return parse_config(json.dumps(config))


@dataclass
class Running:
    runner: ServiceRunner[Behaviour]
    behaviour: Behaviour
    topology: Topology
    channel: Any

    @property
    def blobs(self) -> Any:
        return self.runner.providers.blobs

    def send(self, action: str, uid: str = "1.2.3.1", *, queue: int = 0, as_blob: bool = False, **fields: Any) -> None:
        """Publish a signed instance message asking for `action` to the `queue`-th send queue."""
        message = instance_message(
            PART10,
            signer=self.runner.providers.signer,
            blobs=self.blobs if as_blob else None,
            calling_ae=action,
            sop_instance_uid=uid,
            **fields,
        )
        self.publish_raw(message.headers, message.body, queue=queue)

    def publish_raw(self, headers: dict[str, Any], body: bytes, *, queue: int = 0) -> None:
        self.channel.basic_publish(
            self.topology.send_exchange,
            self.topology.send_queues[queue],
            body,
            pika.BasicProperties(headers=headers, delivery_mode=2),
        )

    def depth(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def take(self, queue: str) -> list[tuple[dict[str, Any], bytes]]:
        """Take (and ack) every message of a queue."""
        out = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append((dict(properties.headers or {}), body))

    def parked(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait for `count` parked messages and return their headers."""
        got: list[dict[str, Any]] = []

        def enough() -> bool:
            got.extend(headers for headers, _ in self.take(self.topology.dead_queue))
            return len(got) >= count

        wait_for(enough, timeout)
        return got


@pytest.fixture
def running(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Running]:
    config = _config(amqp_url, prefix, tmp_path, "one", "two")
    topology = register_topology(amqp_url, config)
    behaviour = Behaviour()
    runner = ServiceRunner(ContractService(behaviour), config, metrics_port=0).start()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        wait_for(lambda: runner.connected, 15)
        yield Running(runner, behaviour, topology, connection.channel())
    finally:
        runner.stop()
        connection.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cause(headers: dict[str, Any]) -> str:
    return _text(headers.get(header_names.CAUSE, ""))


def _reason(headers: dict[str, Any]) -> str:
    return _text(headers.get(header_names.REASON, ""))


# --- acks and confirms -------------------------------------------------------------------------------


def test_an_acked_message_leaves_its_queue_and_nothing_is_parked(running: Running) -> None:
    running.send("ack")

    wait_for(lambda: running.behaviour.seen)
    wait_for(lambda: running.depth(running.topology.send_queues[0]) == 0)
    time.sleep(0.3)
    assert running.take(running.topology.dead_queue) == []


def test_a_message_is_acked_only_after_every_publish_it_caused_is_confirmed(running: Running) -> None:
    running.send("publish-two")

    outputs: list[tuple[dict[str, Any], bytes]] = []
    wait_for(lambda: len(outputs.__iadd__(running.take(running.topology.received_queue))) == 2)
    assert sorted(_text(h["karnak-n"]) for h, _ in outputs) == ["0", "1"]


def test_a_refused_publish_requeues_the_message_instead_of_acking_it(running: Running) -> None:
    running.send("publish-unroutable-once")

    # The first handling published to nowhere: the message was not acked, came back, and the second
    # handling's publish was confirmed before the ack.
    wait_for(lambda: len(running.behaviour.seen) == 2)
    outputs = wait_for(lambda: running.take(running.topology.received_queue))
    assert len(outputs) == 1
    wait_for(lambda: running.depth(running.topology.send_queues[0]) == 0)


# --- blobs ---------------------------------------------------------------------------------------------


def _blob_of(running: Running) -> str:
    files = [p for p in running.blobs.root.rglob("*.dcm")]
    assert len(files) == 1
    return str(files[0].relative_to(running.blobs.root))


def test_the_blob_of_an_acked_message_is_deleted_after_the_ack(running: Running) -> None:
    running.send("ack", as_blob=True)
    blob = _blob_of(running)

    wait_for(lambda: running.depth(running.topology.send_queues[0]) == 0 and running.behaviour.seen)
    wait_for(lambda: not running.blobs.path(blob).exists())


def test_the_blob_of_a_retried_or_parked_message_is_kept(running: Running) -> None:
    running.send("park", as_blob=True)
    blob = _blob_of(running)

    (parked,) = running.parked()
    assert _text(parked[header_names.BLOB]) == blob
    time.sleep(0.3)
    assert running.blobs.path(blob).exists()


def test_the_blob_of_a_requeued_message_stays_until_its_last_handling_acks_it(running: Running) -> None:
    running.send("requeue-once", as_blob=True)
    blob = _blob_of(running)

    wait_for(lambda: len(running.behaviour.seen) == 2)
    wait_for(lambda: not running.blobs.path(blob).exists())
    assert [a for a, _, _ in running.behaviour.seen] == ["requeue-once", "requeue-once"]


# --- handler crashes ---------------------------------------------------------------------------------


def test_a_handler_exception_requeues_the_message_and_the_worker_goes_on(running: Running) -> None:
    running.send("crash-once", "1.2.3.1")
    running.send("ack", "1.2.3.2")

    wait_for(lambda: len(running.behaviour.seen) == 3)
    uids = [uid for _, uid, _ in running.behaviour.seen]
    assert uids.count("1.2.3.1") == 2 and uids.count("1.2.3.2") == 1
    wait_for(lambda: running.depth(running.topology.send_queues[0]) == 0)
    assert running.take(running.topology.dead_queue) == []


def test_a_handler_that_keeps_crashing_parks_the_message_itself_with_the_exception_type_masked(
    running: Running,
) -> None:
    started = time.monotonic()
    running.send("crash")

    (parked,) = running.parked()

    assert time.monotonic() - started < 1.0
    assert _cause(parked) == "handler-crashed"
    assert "ValueError" in _reason(parked)
    assert "Doe^John" not in _reason(parked)
    # Parked by the runtime before RabbitMQ's delivery limit (20 in these tests): after 3 crashes.
    assert len(running.behaviour.seen) == running.runner.config.broker.crash_limit == 3
    time.sleep(0.3)
    assert running.take(running.topology.dead_queue) == []  # once


# --- one test per outcome ------------------------------------------------------------------------------


def test_retry_comes_back_through_the_delay_queue_with_its_attempt_raised(running: Running) -> None:
    running.send("retry")

    wait_for(lambda: len(running.behaviour.seen) == 2, timeout=10)
    assert [attempt for _, _, attempt in running.behaviour.seen] == [0, 1]


def test_park_puts_the_message_in_the_dead_letter_queue_with_cause_reason_and_origin(running: Running) -> None:
    running.send("park")

    (parked,) = running.parked()
    assert _cause(parked) == "refused"
    assert _reason(parked) == "the destination refused it"
    assert _text(parked[header_names.ORIGIN_ROUTING_KEY]) == running.topology.send_queues[0]


def test_requeue_hands_the_message_back_to_its_queue_at_once(running: Running) -> None:
    running.send("requeue-once")

    wait_for(lambda: len(running.behaviour.seen) == 2)
    wait_for(lambda: running.depth(running.topology.send_queues[0]) == 0)


def test_retries_past_the_last_tier_are_parked_with_the_attempts(running: Running) -> None:
    running.send("retry-always", attempt=3)  # the tests' tiers are 1, 2 and 3 s: a fourth attempt has none

    (parked,) = running.parked()
    assert _cause(parked) == "retries-exhausted"
    assert "gave up after 4 attempts" in _reason(parked)


# --- poison messages: parked once, with their own cause, in under a second -------------------------


def _poison_parked(running: Running, cause: str) -> dict[str, Any]:
    started = time.monotonic()
    (parked,) = running.parked()
    assert time.monotonic() - started < 1.0
    assert _cause(parked) == cause
    time.sleep(0.3)
    assert running.take(running.topology.dead_queue) == []
    assert running.behaviour.seen == []  # never reached the handler
    return parked


def test_a_bad_envelope_is_parked_at_once(running: Running) -> None:
    headers = running.runner.providers.signer.sign({"karnak-schema": "karnak.instance/1"}, PART10)
    running.publish_raw(headers, PART10)

    assert "invalid envelope" in _reason(_poison_parked(running, "invalid-envelope"))


def test_a_blob_reference_escaping_the_blob_store_is_parked_at_once(running: Running) -> None:
    envelope = instance_envelope(calling_ae="ack", blob="../../../etc/passwd", digest="00" * 32)
    message = signed(_message(envelope, b""), running.runner.providers.signer)
    running.publish_raw(message.headers, message.body)

    _poison_parked(running, "invalid-blob-reference")


def test_a_body_that_is_not_dicom_is_parked_at_once(running: Running) -> None:
    message = instance_message(b"GIF89a not dicom at all", signer=running.runner.providers.signer, calling_ae="ack")
    running.publish_raw(message.headers, message.body)

    _poison_parked(running, "not-dicom")


def test_a_well_formed_reference_to_a_missing_blob_is_parked_missing_blob(running: Running) -> None:
    running.send("ack", as_blob=True)
    running.blobs.delete(_blob_of(running))

    _poison_parked(running, "missing-blob")


def test_a_blob_altered_after_signing_is_parked(running: Running) -> None:
    running.runner.stop()  # hold the message while its blob is replaced
    running.send("ack", as_blob=True)
    running.blobs.path(_blob_of(running)).write_bytes(PART10 + b"tampered")
    runner = ServiceRunner(ContractService(running.behaviour), running.runner.config, metrics_port=0).start()
    running.runner = runner
    _poison_parked(running, "blob-digest-mismatch")


# --- message authentication ----------------------------------------------------------------------------


def test_a_forged_send_message_is_parked_unauthenticated_and_never_delivered(running: Running) -> None:
    forged = instance_message(PART10, calling_ae="ack")  # right queue, plausible headers, not signed
    running.publish_raw(forged.headers, forged.body)

    assert "signature" in _reason(_poison_parked(running, "unauthenticated"))


def test_a_message_signed_with_another_key_is_parked_unauthenticated(running: Running) -> None:
    from karnak_shared.service.authentication import Signer

    forged = instance_message(PART10, signer=Signer(b"\x01" * 32), calling_ae="ack")
    running.publish_raw(forged.headers, forged.body)

    _poison_parked(running, "unauthenticated")


def test_a_signed_message_whose_headers_were_changed_is_parked_unauthenticated(running: Running) -> None:
    message = instance_message(PART10, signer=running.runner.providers.signer, calling_ae="ack")
    headers = dict(message.headers)
    headers["karnak-destination"] = "somewhere-else"
    running.publish_raw(headers, message.body)

    _poison_parked(running, "unauthenticated")


# --- configuration ---------------------------------------------------------------------------------------


def test_a_new_configuration_starts_consuming_new_queues_and_stops_consuming_removed_ones(
    running: Running, amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    newer = _config(amqp_url, prefix, tmp_path, "two", "three")
    register_topology(amqp_url, newer)

    assert running.runner.apply_config(newer, 2)

    assert running.runner.revision == 2
    three = newer.broker.prefix + ".send.dicom.three"
    one = running.topology.send_queues[0]
    running.send("ack", "1.2.3.9", queue=0)  # to `one`, no longer consumed: it waits in its queue
    _publish_to(running, three, "1.2.3.10")
    wait_for(lambda: [uid for _, uid, _ in running.behaviour.seen] == ["1.2.3.10"])
    time.sleep(0.5)
    assert running.depth(one) == 1  # kept, with its message


def test_work_in_progress_finishes_on_the_state_it_started_with_and_the_old_state_is_released_after(
    running: Running, amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    class Versioned(ContractService):
        def __init__(self) -> None:
            super().__init__(running.behaviour)
            self.released: list[int] = []
            self.used: list[int] = []

        def configure(self, config: GatewayConfig, providers: Providers) -> Behaviour:
            return Behaviour()  # a new state per configuration

        @consume(lambda config, topology: list(topology.send_queues), message=InstanceMessage)
        def handle(self, message: InstanceMessage, work: Work[Behaviour]) -> Outcome:
            time.sleep(1.0)
            self.used.append(id(work.state))
            return Ack()

        def release(self, state: Behaviour) -> None:
            self.released.append(id(state))

    service = Versioned()
    config = running.runner.config
    runner = ServiceRunner(service, config, metrics_port=0)
    running.runner.stop()
    runner.start()
    running.runner = runner
    try:
        wait_for(lambda: runner.connected, 15)
        first = id(runner.state)
        running.send("slow")
        time.sleep(0.4)  # the handler is running on the first state

        assert runner.apply_config(config, 2)
        second = id(runner.state)
        assert second != first and service.released == []  # still in use

        wait_for(lambda: service.used == [first])
        wait_for(lambda: service.released == [first])
        running.send("slow", "1.2.3.2")
        wait_for(lambda: service.used == [first, second])
    finally:
        runner.stop()  # the fixture stops it again: a second stop does nothing


def test_a_configuration_the_service_refuses_leaves_it_on_its_state(running: Running, tmp_path: Path) -> None:
    class Refusing(ContractService):
        def configure(self, config: GatewayConfig, providers: Providers) -> Behaviour:
            raise ValueError("profile unreadable")

    running.runner.service = Refusing(running.behaviour)

    assert not running.runner.apply_config(running.runner.config, 7)
    assert running.runner.revision == 0


def _message(envelope: Envelope, body: bytes) -> Any:
    from karnak_shared.service.testing import Message

    return Message(envelope.to_headers(), body)


def _signed_headers(running: Running, uid: str) -> dict[str, Any]:
    return instance_message(
        PART10, signer=running.runner.providers.signer, calling_ae="ack", sop_instance_uid=uid
    ).headers


def _publish_to(running: Running, queue: str, uid: str) -> None:
    running.channel.basic_publish(
        running.topology.send_exchange, queue, PART10, pika.BasicProperties(headers=_signed_headers(running, uid))
    )
