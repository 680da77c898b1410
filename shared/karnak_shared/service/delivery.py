"""What a sender does with a transfer's result: its `transfer.*` event, and the outcome of a failure.

A transient failure waits in the next delay tier (`Retry`) and is reported by a `transfer.retried` event
with its reason, so the monitor shows an instance that is being retried (DESIGN.md section 16); a
permanent one, or a transient one past the last tier, is parked with its reason and reported by a
`transfer.failed` event. Either event is published (and confirmed by the runner) before the message is
settled.
"""

from __future__ import annotations

from typing import Any

from karnak_shared.envelope import EventKind, TransferEvent
from karnak_shared.errors import DeliveryError
from karnak_shared.sender_metrics import SENT
from karnak_shared.service.messages import InstanceMessage
from karnak_shared.service.outcomes import Outcome, Park, Retry
from karnak_shared.service.providers import Work


def transfer_event(work: Work[Any], message: InstanceMessage, kind: EventKind, reason: str | None) -> None:
    """Publish the `transfer.<kind>.<destination>` event of a message's transfer."""
    envelope = message.envelope
    event = TransferEvent.for_envelope(envelope, kind, envelope.destination or "-", reason)
    work.event(work.topology.events_exchange, event.routing_key, event.to_body())


def delivery_failed(work: Work[Any], message: InstanceMessage, error: DeliveryError) -> Outcome:
    """Retry a transient failure through the delay queues; park a permanent one, or one past the last tier."""
    destination = message.envelope.destination or "-"
    if error.transient and work.redelivery.policy.delay_for(message.attempt) is not None:
        transfer_event(work, message, "retried", error.reason)
        SENT.labels(destination, "retried").inc()
        return Retry(error.reason)
    reason, cause = error.reason, "refused"
    if error.transient:
        reason, cause = f"gave up after {message.attempt + 1} attempts: {reason}", "retries-exhausted"
    transfer_event(work, message, "failed", reason)
    SENT.labels(destination, "failed").inc()
    return Park(reason, cause)
