"""The monitor on the service runtime: real RabbitMQ and PostgreSQL; redelivered events change no count."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from karnak_monitor_service.service import MonitorService
from prometheus_client import REGISTRY

from karnak_monitor.queries import SeriesQuery, list_series
from karnak_shared.broker import Publisher, Settlement
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.database import open_database
from karnak_shared.envelope import TransferEvent, TransferOrigin
from karnak_shared.service import ServiceRunner
from karnak_shared.service.authentication import Signer
from karnak_shared.service.providers import SignedPublisher
from karnak_shared.service.testing import Harness, Message, signed, wait_for
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.databases import postgres_database

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.77"


def event(kind: str, series: int, instance: int, destination: str = "pacs", reason: str | None = None) -> TransferEvent:
    uid = f"{STUDY}.{series}"
    return TransferEvent.model_validate(
        {
            "kind": kind,
            "destination": destination,
            "forward_node": "KARNAK-GW",
            "instance_id": str(uuid.uuid4()),
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
            "sop_instance_uid": f"{uid}.{instance}",
            "study_instance_uid": STUDY,
            "series_instance_uid": uid,
            "reason": reason,
            "received_at": 1_800_000_000.0,
            "at": 1_800_000_000.0 + instance,
            "origin": TransferOrigin(study_instance_uid=STUDY, series_instance_uid=uid, modality="CT"),
        }
    )


def _config(amqp_url: str, prefix: str, tmp_path: Path, database_url: str) -> GatewayConfig:
    pacs = {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": 104}
    raw = gateway_config(amqp_url, prefix, tmp_path, [pacs])
    raw["database"] = {"url": database_url}
    raw["broker"]["retry_delays"] = [1, 2]
    return parse_config(json.dumps(raw))


def counts(sessions: Any) -> dict[str, tuple[int, int, int, int, int]]:
    page = list_series(sessions, SeriesQuery(page_size=100), may_see_originals=True)
    return {r.series_uid: (r.instances, r.sent, r.errors, r.excluded, r.retries) for r in page.items}


@dataclass
class RunningMonitor:
    config: GatewayConfig
    runner: ServiceRunner[Any]
    publisher: SignedPublisher
    sessions: Any

    @property
    def topology(self) -> Topology:
        return self.runner.topology

    def publish(self, item: TransferEvent) -> None:
        # As a sender publishes it: signed, on the events exchange under transfer.<kind>.<destination>.
        self.publisher.publish(self.topology.events_exchange, item.routing_key, item.to_body(), mandatory=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def start_monitor(
    amqp_url: str, prefix: str, tmp_path: Path, postgres_url: str
) -> Iterator[Callable[[], RunningMonitor]]:
    started: list[RunningMonitor] = []
    config = _config(amqp_url, prefix, tmp_path, postgres_url)
    register_topology(amqp_url, config)
    sessions = open_database(postgres_url)

    def start() -> RunningMonitor:
        runner: ServiceRunner[Any] = ServiceRunner(MonitorService(), config, metrics_port=0).start()
        plain = Publisher(amqp_url, runner.topology, confirm_timeout=10).start()
        running = RunningMonitor(config, runner, SignedPublisher(plain, Signer(config.secrets.key_bytes())), sessions)
        started.append(running)
        wait_for(lambda: runner.connected, 15)
        return running

    yield start
    for running in started:
        running.runner.stop()
        running.publisher.publisher.stop()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_delete(f"{prefix}.monitor")
    connection.close()
    sessions.kw["bind"].dispose()


def test_events_published_twice_are_counted_once_per_instance(start_monitor: Callable[[], RunningMonitor]) -> None:
    monitor = start_monitor()
    before = _redelivered("sent")
    events = [event("sent", 1, n) for n in range(3)] + [event("retried", 2, 0, reason="association refused")]
    events += [event("sent", 2, 0), event("rejected", 3, 0, reason="condition is false")]
    for item in events + events:  # every event twice, as RabbitMQ redelivers what was not acked
        monitor.publish(item)

    expected = {f"{STUDY}.1": (3, 3, 0, 0, 0), f"{STUDY}.2": (1, 1, 0, 0, 1), f"{STUDY}.3": (1, 0, 0, 1, 0)}
    wait_for(lambda: counts(monitor.sessions) == expected, 20)
    consumer = monitor.runner.consumer
    assert consumer is not None
    wait_for(lambda: consumer.in_flight == 0, 10)
    assert counts(monitor.sessions) == expected
    assert _redelivered("sent") - before == 4  # the second copy of each of the four sent events


def _redelivered(kind: str) -> float:
    labels = {"kind": kind, "outcome": "redelivered"}
    return REGISTRY.get_sample_value("karnak_monitor_events_total", labels) or 0.0


def test_a_monitor_stopped_mid_stream_and_started_again_counts_every_event_once(
    start_monitor: Callable[[], RunningMonitor],
) -> None:
    first = start_monitor()
    events = [event("sent", 5, n) for n in range(40)]
    for item in events[:20]:
        first.publish(item)
    first.runner.stop()  # whatever it had taken but not acked goes back to the queue
    for item in events[10:]:  # and some of them published again
        first.publish(item)
    second = start_monitor()
    wait_for(lambda: counts(second.sessions).get(f"{STUDY}.5") == (40, 40, 0, 0, 0), 30)
    consumer = second.runner.consumer
    assert consumer is not None
    wait_for(lambda: consumer.in_flight == 0, 10)
    assert counts(second.sessions) == {f"{STUDY}.5": (40, 40, 0, 0, 0)}


def test_the_monitors_queue_takes_every_transfer_event_and_only_the_monitor_declares_it(
    start_monitor: Callable[[], RunningMonitor],
) -> None:
    monitor = start_monitor()
    monitor.publish(event("failed", 9, 0, destination="archive", reason="0xA900 (Data set does not match)"))
    wait_for(lambda: counts(monitor.sessions).get(f"{STUDY}.9") == (1, 0, 1, 0, 0), 15)
    others = Topology.from_config(monitor.config)
    assert monitor.topology.monitor_queue not in others.all_queues()
    assert monitor.topology.monitor_queue in monitor.topology.all_queues()


# --- the handler alone (the runner's own code, a recording publisher) ----------------------------------


@pytest.fixture
def harness(amqp_url: str, prefix: str, tmp_path: Path) -> Harness[Any]:
    config = _config(amqp_url, prefix, tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}")
    return Harness(MonitorService(), config)


def _delivered(harness: Harness[Any], item: TransferEvent, delivery_count: int = 0) -> Settlement | None:
    message = signed(Message({}, item.to_body(), routing_key=item.routing_key), harness.signer)
    return harness.deliver(message, delivery_count=delivery_count).settlement


def test_a_redelivered_event_is_acked_and_changes_no_count(harness: Harness[Any]) -> None:
    item = event("sent", 1, 0)
    assert _delivered(harness, item) is Settlement.ACK
    assert _delivered(harness, item, delivery_count=1) is Settlement.ACK
    assert counts(harness.state.sessions) == {f"{STUDY}.1": (1, 1, 0, 0, 0)}


def test_a_body_that_is_not_a_transfer_event_is_parked_not_counted(harness: Harness[Any]) -> None:
    message = signed(Message({}, b'{"kind": "sent"}', routing_key="transfer.sent.pacs"), harness.signer)
    handled = harness.deliver(message)
    assert handled.cause == "invalid-event"
    assert counts(harness.state.sessions) == {}


def test_a_database_that_cannot_take_the_event_sends_it_through_the_delay_queues(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    config = _config(amqp_url, prefix, tmp_path, f"sqlite:///{tmp_path / 'missing' / 'no-such-dir' / 'm.db'}")
    harness = Harness(MonitorService(), config)
    message = signed(Message({}, event("sent", 1, 0).to_body(), routing_key="transfer.sent.pacs"), harness.signer)
    handled = harness.deliver(message)
    assert handled.settlement is Settlement.ACK  # acked once its copy waits in a delay queue
    (retry,) = handled.published
    assert retry.exchange == f"{prefix}.retry"
    assert retry.routing_key == f"{prefix}.monitor"
    assert json.loads(retry.body)["kind"] == "sent"
