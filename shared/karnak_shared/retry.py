"""Retries and parking for the services not yet on the runtime (stow-sender, kheops-sharer).

The runtime's `karnak_shared.service.redelivery` does this for services on it; this module goes once
the last service has moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from karnak_shared import header_names
from karnak_shared.broker import ConfirmingPublisher, Delivery, Settlement, Verdict
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.errors import BrokerUnavailable, DeliveryError
from karnak_shared.logs import EventLogger
from karnak_shared.service.redelivery import MAX_REASON_LENGTH, RetryPolicy
from karnak_shared.topology import Topology


def schedule_retry(
    publisher: ConfirmingPublisher, topology: Topology, routing_key: str, envelope: Envelope, body: bytes, delay: int
) -> None:
    """Publish the message into the delay queue of `delay` seconds; it comes back to `routing_key`."""
    retried = envelope.model_copy(update={"attempt": envelope.attempt + 1})
    headers = retried.to_headers()
    headers[header_names.RETRY_TIER] = str(delay)
    publisher.publish(topology.retry_exchange, routing_key, body, headers)


def park(
    publisher: ConfirmingPublisher,
    topology: Topology,
    *,
    exchange: str,
    routing_key: str,
    headers: dict[str, Any],
    body: bytes,
    reason: str,
) -> None:
    """Publish the message to the dead-letter queue with its reason and where to replay it."""
    parked = {k: v for k, v in headers.items() if k != header_names.RETRY_TIER}
    parked[header_names.REASON] = reason[:MAX_REASON_LENGTH]
    parked[header_names.ORIGIN_EXCHANGE] = exchange
    parked[header_names.ORIGIN_ROUTING_KEY] = routing_key
    parked[header_names.PARKED_AT] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    publisher.publish(topology.dead_exchange, topology.dead_queue, body, parked)


@dataclass(frozen=True)
class SenderFailures:
    """What a sender does with a delivery that failed: retry it through the delay queues, or park it.

    Shared by the dicom-sender and the stow-sender, so both follow the same rules: a transient failure
    waits in the next delay tier; a permanent one, or a transient one past the last tier, is parked in the
    dead-letter queue with its reason and reported by a `transfer.failed` event. Every outcome is
    published before the delivery is acked; if the broker cannot take it, the delivery is requeued.
    """

    publisher: ConfirmingPublisher
    topology: Topology
    policy: RetryPolicy
    kind: str  # the destinations' queue kind: "dicom" or "stow"
    count: Callable[[str, str], None]  # (destination, outcome) -> the sender's own counter
    log: EventLogger

    def failed(self, delivery: Delivery, envelope: Envelope, error: DeliveryError) -> Verdict:
        """Retry or park a delivery whose transfer failed with `error`."""
        destination = envelope.destination or "-"
        delay = self.policy.delay_for(envelope.attempt) if error.transient else None
        if delay is not None:
            routing_key = self.topology.send_queue(self.kind, destination)
            try:
                schedule_retry(self.publisher, self.topology, routing_key, envelope, delivery.body, delay)
            except BrokerUnavailable:
                return Verdict(Settlement.REQUEUE)
            self.count(destination, "retried")
            self.log.warning("instance.retry-scheduled", reason=error.reason, delay=delay, **envelope.log_fields())
            return Verdict(Settlement.ACK)
        reason = error.reason
        if error.transient:
            reason = f"gave up after {envelope.attempt + 1} attempts: {reason}"
        return self.park(delivery, envelope, reason)

    def park(self, delivery: Delivery, envelope: Envelope | None, reason: str) -> Verdict:
        """Park a delivery with its reason (and a `transfer.failed` event when it has an envelope)."""
        destination = envelope.destination if envelope and envelope.destination else delivery.queue
        try:
            park(
                self.publisher,
                self.topology,
                exchange=self.topology.send_exchange,
                routing_key=delivery.queue or delivery.routing_key,
                headers=delivery.headers,
                body=delivery.body,
                reason=reason,
            )
            if envelope is not None:
                self.event(envelope, "failed", reason)
        except BrokerUnavailable:
            return Verdict(Settlement.REQUEUE)
        self.count(destination, "failed")
        fields = envelope.log_fields() if envelope else {"queue": delivery.queue}
        self.log.error("instance.parked", reason=reason, **fields)
        return Verdict(Settlement.ACK)

    def event(self, envelope: Envelope, kind: Literal["sent", "failed", "rejected"], reason: str | None) -> None:
        """Publish a `transfer.<kind>.<destination>` event (no subscriber is not an error: no `mandatory`)."""
        exchange, routing_key, body = self.event_message(envelope, kind, reason)
        self.publisher.publish(exchange, routing_key, body, mandatory=False)

    def event_message(
        self, envelope: Envelope, kind: Literal["sent", "failed", "rejected"], reason: str | None
    ) -> tuple[str, str, bytes]:
        """(exchange, routing key, body) of a `transfer.<kind>.<destination>` event, for a caller that publishes."""
        event = TransferEvent.for_envelope(envelope, kind, envelope.destination or "-", reason)
        return self.topology.events_exchange, event.routing_key, event.to_body()
