"""Retries through the delay queues and parking in the dead-letter queue, shared by the senders."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from karnak_shared.broker import ConfirmingPublisher
from karnak_shared.envelope import Envelope
from karnak_shared.topology import (
    ORIGIN_EXCHANGE_HEADER,
    ORIGIN_ROUTING_KEY_HEADER,
    PARKED_AT_HEADER,
    REASON_HEADER,
    RETRY_TIER_HEADER,
    Topology,
)

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off tiers: attempt n (0-based) waits `delays[n]` seconds; past the last tier, give up."""

    delays: tuple[int, ...]

    def delay_for(self, attempt: int) -> int | None:
        """The delay before retry number `attempt + 1`, or None when the attempts are exhausted."""
        return self.delays[attempt] if attempt < len(self.delays) else None


def schedule_retry(
    publisher: ConfirmingPublisher, topology: Topology, routing_key: str, envelope: Envelope, body: bytes, delay: int
) -> None:
    """Publish the message into the delay queue of `delay` seconds; it comes back to `routing_key`."""
    retried = envelope.model_copy(update={"attempt": envelope.attempt + 1})
    headers = retried.to_headers()
    headers[RETRY_TIER_HEADER] = str(delay)
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
    parked = {k: v for k, v in headers.items() if k != RETRY_TIER_HEADER}
    parked[REASON_HEADER] = reason[:MAX_REASON_LENGTH]
    parked[ORIGIN_EXCHANGE_HEADER] = exchange
    parked[ORIGIN_ROUTING_KEY_HEADER] = routing_key
    parked[PARKED_AT_HEADER] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    publisher.publish(topology.dead_exchange, topology.dead_queue, body, parked)
