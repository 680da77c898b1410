"""Each service's RabbitMQ user, created on the real local broker, may do its work and nothing more.

The users are created with the permissions `karnak_shared.broker_users` gives (what `karnak broker users`
prints) for this test's own prefix, with `rabbitmqctl`, and deleted at the end. The topology is declared
first with the operator's rights (`karnak broker setup`); the services then only check it, passively.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest

from karnak_shared.broker_users import ALL_USERS, OPERATOR, SERVICE_USERS, permissions
from karnak_shared.topology import Topology
from tests.support.faults import _rabbitmqctl

pytestmark = pytest.mark.integration

# What each service must be able to do, beyond declaring the topology: where it publishes, what it consumes.
PUBLISHES = {
    "receiver": {"ingest"},
    "processor": {"send", "events", "retry", "dead"},
    "dicom-sender": {"events", "retry", "dead"},
    "stow-sender": {"events", "retry", "dead"},
    "kheops-sharer": {"events", "retry", "dead"},
    "notifier": {"dead"},
    "monitor": {"retry", "dead"},
}
CONSUMES = {
    "receiver": set(),
    "processor": {"received"},
    "dicom-sender": {"send.dicom.pacs"},
    "stow-sender": {"send.stow.web"},
    "kheops-sharer": {"kheops"},
    "notifier": {"notifier"},
    "monitor": {"monitor"},
}
EXCHANGES = ("ingest", "send", "retry", "events", "dead")


@pytest.fixture
def topology(prefix: str, amqp_url: str) -> Iterator[Topology]:
    """The topology as a service with its own user sees it: declared by the operator, checked passively."""
    declared = Topology(
        prefix=prefix,
        retry_delays=(5,),
        delivery_limit=5,
        send_queues=(f"{prefix}.send.dicom.pacs", f"{prefix}.send.stow.web"),
        notifier=True,
        kheops=True,
        # The monitor's queue, declared (with its dead-lettering) and bound as `karnak broker setup` does.
        monitor=True,
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        try:
            declared.declare(connection.channel())
            yield dataclasses.replace(declared, declare_topology=False)
        finally:
            # On a fresh channel: a declaration the broker refused closed the first one, and what it had
            # declared before must not stay on the shared broker.
            declared.delete(connection.channel())
    finally:
        connection.close()


def _ctl(amqp_url: str, *args: str) -> None:
    done = subprocess.run([_rabbitmqctl(amqp_url), "-q", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"rabbitmqctl {args[0]}: {done.stdout}{done.stderr}"


@pytest.fixture
def users(amqp_url: str, prefix: str) -> Iterator[dict[str, str]]:
    """A user per service (and the operator) with its permissions for this prefix; their AMQP URLs."""
    urls: dict[str, str] = {}
    parts = urlsplit(amqp_url)
    vhost = parts.path.lstrip("/") or "/"
    try:
        for user in ALL_USERS:
            name, password = f"{prefix}-{user}", secrets.token_hex(16)
            _ctl(amqp_url, "add_user", name, password)
            urls[user] = urlunsplit(
                parts._replace(netloc=f"{quote(name)}:{password}@{parts.hostname}:{parts.port or 5672}")
            )
            granted = permissions(user, prefix)
            _ctl(amqp_url, "set_permissions", "-p", vhost, name, granted.configure, granted.write, granted.read)
        yield urls
    finally:
        for user in urls:
            subprocess.run(
                [_rabbitmqctl(amqp_url), "-q", "delete_user", f"{prefix}-{user}"], capture_output=True, timeout=120
            )


def _refused(error: BaseException) -> bool:
    return isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code == 403


def _can_publish(url: str, exchange: str, routing_key: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish(exchange, routing_key, b"forged", pika.BasicProperties(delivery_mode=2))
        except pika.exceptions.UnroutableError:
            return True  # allowed, just no binding for the key
        except pika.exceptions.AMQPChannelError as exc:
            assert _refused(exc), exc
            return False
        return True
    finally:
        connection.close()


def _can_consume(url: str, queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        try:
            channel.basic_get(queue, auto_ack=False)
        except pika.exceptions.AMQPChannelError as exc:
            assert _refused(exc), exc
            return False
        return True
    finally:
        connection.close()


def _control_traffic(connection: pika.BlockingConnection, topology: Topology) -> None:
    """What every instance's control connection does: a queue of its own on config and status, a report out.

    And no more: binding that queue to a work exchange (to read what goes to the PACS) is refused.
    """
    channel = connection.channel()
    for exchange in (topology.config_exchange, topology.status_exchange):
        channel.exchange_declare(exchange, passive=True)
    own = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    channel.queue_bind(own, topology.config_exchange)
    channel.queue_bind(own, topology.status_exchange, routing_key="request.status")
    channel.confirm_delivery()
    channel.basic_publish(topology.status_exchange, "status.test", b"{}")
    for exchange in (topology.send_exchange, topology.events_exchange, topology.ingest_exchange):
        tap = connection.channel()
        own = tap.queue_declare("", exclusive=True, auto_delete=True).method.queue
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            tap.queue_bind(own, exchange, routing_key="#")
        assert refused.value.reply_code == 403, f"a service's own queue bound to {exchange}"


def _routing_key(topology: Topology, exchange: str) -> str:
    return {
        "ingest": topology.received_queue,
        "send": f"{topology.prefix}.send.dicom.pacs",
        "events": "transfer.sent.pacs",
        "retry": f"{topology.prefix}.send.dicom.pacs",
        "dead": topology.dead_queue,
    }[exchange]


@pytest.mark.parametrize("service", SERVICE_USERS)
def test_each_service_user_declares_the_topology_and_publishes_and_consumes_only_where_its_service_does(
    topology: Topology, users: dict[str, str], service: str
) -> None:
    url = users[service]
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        topology.declare(connection.channel())  # what every service does at start: a passive check
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().queue_declare(f"{topology.prefix}.its-own", durable=True)
        assert refused.value.reply_code == 403, "a service user may declare nothing"
        _control_traffic(connection, topology)
    finally:
        connection.close()
    published = {e for e in EXCHANGES if _can_publish(url, f"{topology.prefix}.{e}", _routing_key(topology, e))}
    assert published == PUBLISHES[service]
    queues = {"received", "send.dicom.pacs", "send.stow.web", "notifier", "kheops", "monitor", "retry.5", "dead"}
    consumed = {q for q in queues if _can_consume(url, f"{topology.prefix}.{q}")}
    assert consumed == CONSUMES[service]
    # Nobody but the operator publishes by queue name through the default exchange.
    assert not _can_publish(url, "", f"{topology.prefix}.send.dicom.pacs")


def test_a_message_forged_with_the_receivers_credentials_cannot_reach_a_send_queue(
    topology: Topology, users: dict[str, str], amqp_url: str
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(users["receiver"]))
    try:
        topology.declare(connection.channel())
    finally:
        connection.close()
    send_queue = f"{topology.prefix}.send.dicom.pacs"
    for exchange, key in (
        (topology.send_exchange, send_queue),
        (topology.retry_exchange, send_queue),
        ("", send_queue),
    ):
        assert not _can_publish(users["receiver"], exchange, key), exchange
    check = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        assert check.channel().queue_declare(send_queue, passive=True).method.message_count == 0
    finally:
        check.close()


def test_the_operator_user_may_replay_a_parked_message_to_its_send_queue(
    topology: Topology, users: dict[str, str]
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(users[OPERATOR]))
    try:
        topology.declare(connection.channel())
    finally:
        connection.close()
    assert _can_publish(users[OPERATOR], topology.send_exchange, f"{topology.prefix}.send.dicom.pacs")
    assert _can_consume(users[OPERATOR], topology.dead_queue)
