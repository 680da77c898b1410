"""The broker client against the real RabbitMQ: confirms, unroutable messages, reconnection."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pika
import pytest

from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement
from karnak_shared.config import parse_config
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.integration


def _topology(amqp_url: str, prefix: str, tmp_path: Path) -> Topology:
    config = gateway_config(
        amqp_url,
        prefix,
        tmp_path,
        destinations=[{"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": 104}],
    )
    return register_topology(amqp_url, parse_config(json.dumps(config)))


def close_connections_named(name: str) -> int:
    """Have the broker close every connection whose client-provided name is `name` (as a broker restart would)."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("this test closes connections with rabbitmqctl, which is not installed here")
    listing = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
        capture_output=True,
        text=True,
        check=True,
    )
    closed = 0
    for line in listing.stdout.splitlines():
        pid, _, properties = line.partition("\t")
        if pid.startswith("<") and f'{{"connection_name","{name}"}}' in properties:
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "test: simulated broker restart"],
                capture_output=True,
                check=True,
            )
            closed += 1
    return closed


def test_a_confirmed_publish_is_in_its_queue(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    topology = _topology(amqp_url, prefix, tmp_path)
    publisher = Publisher(amqp_url, topology).start()
    try:
        publisher.publish(topology.ingest_exchange, topology.received_queue, b"payload", {"k": "v"})
    finally:
        publisher.stop()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    _method, properties, body = connection.channel().basic_get(topology.received_queue, auto_ack=True)
    connection.close()
    assert body == b"payload"
    assert properties.delivery_mode == 2
    assert properties.headers["k"] == "v"


def test_an_unroutable_message_is_an_error_not_a_silent_drop(amqp_url: str, prefix: str, tmp_path: Path) -> None:
    topology = _topology(amqp_url, prefix, tmp_path)
    publisher = Publisher(amqp_url, topology).start()
    try:
        with pytest.raises(BrokerUnavailable, match="unroutable"):
            publisher.publish(topology.send_exchange, f"{prefix}.send.dicom.nowhere", b"x")
        # The publisher keeps working after the error.
        publisher.publish(topology.ingest_exchange, topology.received_queue, b"after")
    finally:
        publisher.stop()


def test_publishing_without_a_broker_fails_at_once_with_broker_unavailable(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    topology = _topology(amqp_url, prefix, tmp_path)
    publisher = Publisher(f"amqp://guest:secret-password@127.0.0.1:{free_port()}/", topology, confirm_timeout=5).start()
    try:
        with pytest.raises(BrokerUnavailable) as raised:
            publisher.publish(topology.ingest_exchange, topology.received_queue, b"x")
        assert "secret-password" not in str(raised.value)
    finally:
        publisher.stop()


def test_the_publisher_reconnects_after_the_broker_closes_its_connection(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    topology = _topology(amqp_url, prefix, tmp_path)
    name = f"test-publisher-{uuid.uuid4().hex[:8]}"
    publisher = Publisher(amqp_url, topology, name=name).start()
    try:
        publisher.publish(topology.ingest_exchange, topology.received_queue, b"one")
        assert close_connections_named(name) == 1
        wait_until(lambda: not publisher.connected, 10, "publisher notices the closed connection")
        wait_until(lambda: publisher.connected, 15, "publisher reconnects by itself")
        publisher.publish(topology.ingest_exchange, topology.received_queue, b"two")
    finally:
        publisher.stop()


def test_deliveries_unsettled_when_the_connection_drops_are_redelivered_and_none_is_lost(
    amqp_url: str, prefix: str, tmp_path: Path
) -> None:
    topology = _topology(amqp_url, prefix, tmp_path)
    publisher = Publisher(amqp_url, topology).start()
    for i in range(20):
        publisher.publish(topology.ingest_exchange, topology.received_queue, f"m{i}".encode())
    publisher.stop()

    name = f"test-consumer-{uuid.uuid4().hex[:8]}"
    acked: set[bytes] = set()
    held: list[Delivery] = []
    lock = threading.Lock()
    dropped = threading.Event()

    def dispatch(delivery: Delivery) -> None:
        with lock:
            # Before the drop, hold every delivery unsettled (work in progress); after it, ack them.
            if not dropped.is_set():
                held.append(delivery)
                return
        consumer.settle(delivery, Settlement.ACK)
        with lock:
            acked.add(delivery.body)

    consumer = Consumer(amqp_url, topology, [topology.received_queue], dispatch, prefetch=50, name=name).start()
    try:
        wait_until(lambda: len(held) == 20, 10, "20 deliveries in flight")
        dropped.set()
        assert close_connections_named(name) == 1
        # Settling a delivery of the dead connection is dropped quietly: the broker redelivers it.
        for delivery in held:
            consumer.settle(delivery, Settlement.ACK)
        wait_until(lambda: len(acked) == 20, 20, "every message redelivered and acked after reconnecting")
        assert acked == {f"m{i}".encode() for i in range(20)}
    finally:
        consumer.stop(drain_timeout=5)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    remaining = connection.channel().queue_declare(topology.received_queue, passive=True).method.message_count
    connection.close()
    assert remaining == 0
