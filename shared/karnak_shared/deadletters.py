"""The dead-letter queue as operators see it: list parked messages, replay them where they came from.

Messages arrive there two ways: parked by a service with `x-karnak-reason` and their origin in headers,
or dead-lettered by RabbitMQ when they hit `x-delivery-limit` (origin and reason in `x-death`).
Listing takes messages without acking them and hands them all back by closing the channel, so listing
never removes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pika
import pika.exceptions

from karnak_shared import header_names
from karnak_shared.broker import open_connection
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.service.authentication import Signer
from karnak_shared.topology import Topology


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ParkedMessage:
    """What an operator needs to decide about a parked message (no patient data)."""

    instance_id: str
    destination: str
    sop_instance_uid: str
    reason: str
    cause: str
    parked_at: str
    origin_exchange: str
    origin_routing_key: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_headers(cls, headers: dict[str, Any]) -> ParkedMessage:
        exchange = _text(headers.get(header_names.ORIGIN_EXCHANGE))
        routing_key = _text(headers.get(header_names.ORIGIN_ROUTING_KEY))
        reason = _text(headers.get(header_names.REASON))
        parked_at = _text(headers.get(header_names.PARKED_AT))
        deaths = headers.get("x-death") or []
        if deaths and not exchange:
            death = deaths[0]
            exchange = _text(death.get("exchange"))
            keys = death.get("routing-keys") or []
            routing_key = _text(keys[0]) if keys else ""
            reason = (
                reason or f"dead-lettered by RabbitMQ ({_text(death.get('reason'))}) from {_text(death.get('queue'))}"
            )
            parked_at = parked_at or _text(death.get("time"))
        return cls(
            instance_id=_text(headers.get("karnak-instance-id")) or "-",
            destination=_text(headers.get("karnak-destination")) or "-",
            sop_instance_uid=_text(headers.get("karnak-sop-instance-uid")) or "-",
            reason=reason or "(no reason recorded)",
            cause=_text(headers.get(header_names.CAUSE)) or ("delivery-limit" if deaths else "-"),
            parked_at=parked_at or "-",
            origin_exchange=exchange,
            origin_routing_key=routing_key,
        )


class DeadLetterQueue:
    """A short-lived connection to the dead-letter queue, for the `karnak dead` commands."""

    def __init__(self, connection: Any, topology: Topology, signer: Signer | None = None) -> None:
        self._connection = connection
        self._topology = topology
        self._signer = signer or Signer(None)
        self.queue = topology.dead_queue

    @classmethod
    def connect(cls, config: GatewayConfig) -> DeadLetterQueue:
        topology = Topology.from_config(config)
        connection = open_connection(config.broker.url.get_secret_value(), name="karnak-dead")
        channel = connection.channel()
        topology.declare(channel)
        channel.close()
        return cls(connection, topology, Signer(config.secrets.key_bytes()))

    def close(self) -> None:
        try:
            self._connection.close()
        except pika.exceptions.AMQPError:
            pass

    def _drain(self, channel: Any, limit: int) -> list[tuple[Any, Any, bytes]]:
        taken: list[tuple[Any, Any, bytes]] = []
        while len(taken) < limit:
            method, properties, body = channel.basic_get(self.queue, auto_ack=False)
            if method is None:
                break
            taken.append((method, properties, body))
        return taken

    def list(self, limit: int = 1000) -> list[ParkedMessage]:
        """The parked messages, oldest first, left in the queue."""
        channel = self._connection.channel()
        try:
            taken = self._drain(channel, limit)
            return [ParkedMessage.from_headers(dict(p.headers or {})) for _, p, _ in taken]
        finally:
            channel.close()  # hands every message back, unacked

    def delete(self, instance_ids: set[str], destination: str | None, everything: bool) -> int:
        """Remove matching parked messages for good (acked); the others stay parked."""
        channel = self._connection.channel()
        deleted = 0
        try:
            for method, properties, _ in self._drain(channel, 1_000_000):
                parked = ParkedMessage.from_headers(dict(properties.headers or {}))
                if _wanted(parked, instance_ids, destination, everything):
                    channel.basic_ack(method.delivery_tag)
                    deleted += 1
        finally:
            if channel.is_open:
                channel.close()
        return deleted

    def queued(self, queue: str) -> int:
        """How many messages wait in `queue` (0 when it does not exist)."""
        channel = self._connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # 404: no such queue, so nothing waits in it
        finally:
            if channel.is_open:
                channel.close()

    def replay(
        self,
        instance_ids: set[str],
        destination: str | None,
        everything: bool,
        on_total: Callable[[int], None] | None = None,
        on_replayed: Callable[[], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Re-publish matching parked messages to their origin, acking each only after its confirm.

        `on_total` is told how many messages match once the queue is drained, `on_replayed` after each one;
        `should_stop` is asked between messages: a stop leaves the rest parked (handed back unacked) and never
        splits a message's publish from its ack, so an interrupted replay followed by another one delivers each
        parked message exactly once.
        """
        channel = self._connection.channel()
        channel.confirm_delivery()
        replayed = 0
        try:
            matching = []
            for method, properties, body in self._drain(channel, 1_000_000):
                headers = dict(properties.headers or {})
                parked = ParkedMessage.from_headers(headers)
                if _wanted(parked, instance_ids, destination, everything):
                    matching.append((method, body, headers, parked))
            if on_total is not None:
                on_total(len(matching))
            for method, body, headers, parked in matching:
                if should_stop is not None and should_stop():
                    break
                if not parked.origin_routing_key:
                    raise BrokerUnavailable(f"parked message {parked.instance_id} records no origin; cannot replay it")
                # Only a message that was authentic when parked is signed again (its attempt changes); a
                # forged one goes back as it is and is parked `unauthenticated` again.
                authentic = self._signer.check(headers, body)
                for key in (
                    header_names.REASON,
                    header_names.CAUSE,
                    header_names.ORIGIN_EXCHANGE,
                    header_names.ORIGIN_ROUTING_KEY,
                    header_names.PARKED_AT,
                    "x-death",
                ):
                    headers.pop(key, None)
                headers[header_names.ATTEMPT] = 0
                if authentic:
                    headers = self._signer.sign(headers, body)
                try:
                    channel.basic_publish(
                        parked.origin_exchange,
                        parked.origin_routing_key,
                        body,
                        properties=pika.BasicProperties(delivery_mode=2, headers=headers),
                        mandatory=True,
                    )
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise BrokerUnavailable(
                        f"cannot replay {parked.instance_id} to {parked.origin_routing_key}: {exc!r}"
                    ) from None
                channel.basic_ack(method.delivery_tag)
                replayed += 1
                if on_replayed is not None:
                    on_replayed()
        finally:
            if channel.is_open:
                channel.close()
        return replayed


def _wanted(parked: ParkedMessage, instance_ids: set[str], destination: str | None, everything: bool) -> bool:
    return (
        everything
        or parked.instance_id in instance_ids
        or (destination is not None and parked.destination == destination)
    )
