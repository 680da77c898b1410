"""The RabbitMQ topology: its names, and what `declare` asks of a channel (recorded, no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from karnak_shared import header_names
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.topology import DEAD_DELIVERY_LIMIT, Topology

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: research-pacs, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104}
      - {id: kheops-main, type: stow, url: 'https://kheops.example/api/studies'}
  - ae_title: KARNAK-GW2
    destinations:
      - {id: archive, type: dicom, ae_title: ARCHIVE, hostname: archive.example, port: 11113}
"""


class RecordingChannel:
    """Records the pika channel calls `Topology.declare` makes."""

    def __init__(self) -> None:
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.bindings: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def exchange_declare(self, exchange: str, exchange_type: str = "direct", durable: bool = False, **kw: Any) -> None:
        self.calls.append(f"exchange {exchange}")
        self.exchanges[exchange] = {"type": exchange_type, "durable": durable, **kw}

    def queue_declare(
        self, queue: str, durable: bool = False, arguments: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        self.calls.append(f"queue {queue}")
        self.queues[queue] = {"durable": durable, "arguments": dict(arguments or {}), **kw}

    def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        self.calls.append(f"bind {queue}")
        self.bindings.append({"queue": queue, "exchange": exchange, "routing_key": routing_key, "arguments": arguments})

    def bindings_of(self, queue: str) -> list[dict[str, Any]]:
        return [b for b in self.bindings if b["queue"] == queue]


@pytest.fixture
def config() -> GatewayConfig:
    return parse_config(CONFIG)


@pytest.fixture
def topology(config: GatewayConfig) -> Topology:
    return Topology.from_config(config)


@pytest.fixture
def channel(topology: Topology) -> RecordingChannel:
    recorder = RecordingChannel()
    topology.declare(recorder)
    return recorder


# --- names ---------------------------------------------------------------------------------------


def test_send_queues_are_named_by_protocol_and_destination_id(topology: Topology) -> None:
    assert topology.send_queues == (
        "karnak.send.dicom.research-pacs",
        "karnak.send.stow.kheops-main",
        "karnak.send.dicom.archive",
    )
    assert topology.send_queue("dicom", "research-pacs") == "karnak.send.dicom.research-pacs"


def test_fixed_names_follow_the_design(topology: Topology) -> None:
    assert topology.ingest_exchange == "karnak.ingest"
    assert topology.received_queue == "karnak.received"
    assert topology.send_exchange == "karnak.send"
    assert topology.retry_exchange == "karnak.retry"
    assert topology.events_exchange == "karnak.events"
    assert topology.dead_exchange == "karnak.dead"
    assert topology.dead_queue == "karnak.dead"


def test_one_retry_queue_per_configured_delay(topology: Topology) -> None:
    assert [topology.retry_queue(d) for d in topology.retry_delays] == [
        "karnak.retry.5",
        "karnak.retry.30",
        "karnak.retry.120",
        "karnak.retry.600",
        "karnak.retry.3600",
    ]


def test_prefix_and_retry_delays_come_from_the_broker_section() -> None:
    config = parse_config(CONFIG + "broker: {prefix: test-run.7, retry_delays: [1, 15], delivery_limit: 4}\n")

    topology = Topology.from_config(config)

    assert topology.received_queue == "test-run.7.received"
    assert topology.send_queues[0] == "test-run.7.send.dicom.research-pacs"
    assert topology.retry_queue(15) == "test-run.7.retry.15"
    assert topology.retry_delays == (1, 15)
    assert topology.delivery_limit == 4
    assert topology.all_queues() == [
        "test-run.7.received",
        "test-run.7.send.dicom.research-pacs",
        "test-run.7.send.stow.kheops-main",
        "test-run.7.send.dicom.archive",
        "test-run.7.retry.1",
        "test-run.7.retry.15",
        "test-run.7.dead",
    ]


# --- declare -------------------------------------------------------------------------------------


def test_exchanges_are_durable_with_the_designed_types(channel: RecordingChannel) -> None:
    assert {name: (e["type"], e["durable"]) for name, e in channel.exchanges.items()} == {
        "karnak.ingest": ("direct", True),
        "karnak.send": ("direct", True),
        "karnak.retry": ("headers", True),
        "karnak.events": ("topic", True),
        "karnak.dead": ("fanout", True),
        "karnak.config": ("fanout", True),
        "karnak.status": ("topic", True),
    }


def test_every_queue_of_the_topology_is_declared(channel: RecordingChannel, topology: Topology) -> None:
    assert sorted(channel.queues) == sorted(topology.all_queues())


def test_every_queue_is_a_durable_quorum_queue(channel: RecordingChannel) -> None:
    for name, queue in channel.queues.items():
        assert queue["durable"] is True, name
        assert queue["arguments"]["x-queue-type"] == "quorum", name


def test_every_queue_sets_its_delivery_limit_explicitly(channel: RecordingChannel, topology: Topology) -> None:
    for name, queue in channel.queues.items():
        expected = DEAD_DELIVERY_LIMIT if name == topology.dead_queue else topology.delivery_limit
        assert queue["arguments"]["x-delivery-limit"] == expected, name


def test_work_queues_dead_letter_to_the_dead_exchange_at_least_once(
    channel: RecordingChannel, topology: Topology
) -> None:
    for name in (topology.received_queue, *topology.send_queues):
        arguments = channel.queues[name]["arguments"]
        assert arguments["x-dead-letter-exchange"] == "karnak.dead", name
        assert arguments["x-dead-letter-strategy"] == "at-least-once", name
        assert arguments["x-overflow"] == "reject-publish", name


def test_retry_queues_expire_after_their_delay_back_to_the_send_exchange(
    channel: RecordingChannel, topology: Topology
) -> None:
    for delay in topology.retry_delays:
        arguments = channel.queues[topology.retry_queue(delay)]["arguments"]
        assert arguments["x-message-ttl"] == delay * 1000
        assert arguments["x-dead-letter-exchange"] == "karnak.send"
        assert "x-dead-letter-routing-key" not in arguments  # the message keeps its own routing key
        assert arguments["x-dead-letter-strategy"] == "at-least-once"
        assert arguments["x-overflow"] == "reject-publish"


def test_retry_queues_are_bound_on_the_retry_tier_header(channel: RecordingChannel, topology: Topology) -> None:
    for delay in topology.retry_delays:
        (binding,) = channel.bindings_of(topology.retry_queue(delay))
        assert binding["exchange"] == "karnak.retry"
        assert binding["arguments"] == {"x-match": "all", header_names.RETRY_TIER: str(delay)}


def test_send_queues_are_bound_under_their_own_name(channel: RecordingChannel, topology: Topology) -> None:
    for queue in topology.send_queues:
        assert channel.bindings_of(queue) == [
            {"queue": queue, "exchange": "karnak.send", "routing_key": queue, "arguments": None}
        ]


def test_received_queue_is_bound_to_the_ingest_exchange_and_to_the_send_exchange_for_retries(
    channel: RecordingChannel,
) -> None:
    # The second binding brings back an instance the processor retried through a delay queue.
    assert channel.bindings_of("karnak.received") == [
        {
            "queue": "karnak.received",
            "exchange": "karnak.ingest",
            "routing_key": "karnak.received",
            "arguments": None,
        },
        {
            "queue": "karnak.received",
            "exchange": "karnak.send",
            "routing_key": "karnak.received",
            "arguments": None,
        },
    ]


def test_dead_queue_is_bound_to_the_dead_exchange(channel: RecordingChannel) -> None:
    (binding,) = channel.bindings_of("karnak.dead")
    assert binding["exchange"] == "karnak.dead"


def test_exchanges_are_declared_before_the_queues_bound_to_them(channel: RecordingChannel) -> None:
    first_bind = next(i for i, call in enumerate(channel.calls) if call.startswith("bind"))
    assert all(call.startswith("exchange") for call in channel.calls[:5])
    assert first_bind > 4


def test_declaring_twice_asks_for_the_same_topology(topology: Topology) -> None:
    first, second = RecordingChannel(), RecordingChannel()

    topology.declare(first)
    topology.declare(second)

    assert first.calls == second.calls
    assert first.queues == second.queues


@pytest.mark.parametrize(
    "notifications,expected",
    [
        ("", False),
        (", notifications: {emails: ''}", False),
        (", notifications: {emails: 'team@hospital.org'}", True),
    ],
    ids=["none", "no-address", "an-address"],
)
def test_the_notifier_queue_exists_only_when_the_notifier_would_read_it(notifications: str, expected: bool) -> None:
    # The notifier ignores a destination whose notifications name nobody: no service may declare the
    # queue for it, or events would pile up in a queue nobody consumes.
    config = parse_config(
        "forward_nodes:\n  - ae_title: KARNAK-GW\n    destinations:\n"
        f"      - {{id: pacs, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104{notifications}}}\n"
    )

    assert Topology.from_config(config).notifier is expected
