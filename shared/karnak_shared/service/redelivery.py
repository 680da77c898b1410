"""Outcomes as broker actions, for every service: delay tiers, the attempt header, dead-lettering.

A `Retry` is published to the retry exchange under the message's own queue name with the attempt
count raised by one and its delay tier in a header; the delay queue's TTL then dead-letters it back to
that queue through the send exchange. Past the last tier it is parked. A `Park` is published to the
dead-letter exchange with its cause, reason and where `karnak dead replay` puts it back. The message's
own `karnak-*` headers are kept, so a parked message keeps the signature it came with (a forged one
stays unauthenticated when replayed); a retried one is signed again, its attempt having changed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from karnak_shared import header_names
from karnak_shared.broker import Settlement
from karnak_shared.service.authentication import Signer
from karnak_shared.service.messages import Received
from karnak_shared.service.outcomes import Ack, Outcome, Park, Requeue, Retry
from karnak_shared.topology import Topology

MAX_REASON_LENGTH = 1000


@dataclass(frozen=True)
class RetryPolicy:
    """Back-off tiers: attempt n (0-based) waits `delays[n]` seconds; past the last tier, give up."""

    delays: tuple[int, ...]

    def delay_for(self, attempt: int) -> int | None:
        """The delay before retry number `attempt + 1`, or None when the attempts are exhausted."""
        return self.delays[attempt] if attempt < len(self.delays) else None


@dataclass(frozen=True)
class Publish:
    """One message to publish (and have confirmed) as part of settling a delivery."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool = True


@dataclass(frozen=True)
class Action:
    """What settling a delivery takes: these publishes confirmed, then this settlement."""

    publishes: tuple[Publish, ...]
    settlement: Settlement
    parked: Park | None = None
    retried_after: int | None = None


def _own_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The message's own headers, without the broker's (`x-death`, `x-delivery-count`) and parking ones."""
    return {name: value for name, value in headers.items() if not name.startswith("x-")}


@dataclass(frozen=True)
class Redelivery:
    """Turns outcomes into publishes and settlements for one topology, retry policy and key."""

    topology: Topology
    policy: RetryPolicy
    signer: Signer

    def action(self, outcome: Outcome, received: Received) -> Action:
        """The publishes and settlement that carry out `outcome` for a delivered message."""
        if isinstance(outcome, Ack):
            return Action((), Settlement.ACK)
        if isinstance(outcome, Requeue):
            return Action((), Settlement.REQUEUE)
        if isinstance(outcome, Retry):
            delay = self.policy.delay_for(received.attempt)
            if delay is None:
                outcome = Park(f"gave up after {received.attempt + 1} attempts: {outcome.reason}", "retries-exhausted")
            else:
                retried = self.retry(received.headers, received.body, received.queue, received.attempt, delay)
                return Action((retried,), Settlement.ACK, retried_after=delay)
        assert isinstance(outcome, Park)
        exchange, routing_key = self.topology.origin_of(received.queue, received.exchange, received.routing_key)
        parked = self.park(received.headers, received.body, exchange, routing_key, outcome, sign=False)
        return Action((parked,), Settlement.ACK, parked=outcome)

    def retry(self, headers: Mapping[str, Any], body: bytes, queue: str, attempt: int, delay: int) -> Publish:
        """The publish that sends a message (or a copy for one destination) through the `delay` s tier."""
        retried = _own_headers(headers)
        retried[header_names.ATTEMPT] = attempt + 1
        retried = self.signer.sign(retried, body)
        retried[header_names.RETRY_TIER] = str(delay)
        return Publish(self.topology.retry_exchange, queue, body, retried)

    def park(
        self,
        headers: Mapping[str, Any],
        body: bytes,
        exchange: str,
        routing_key: str,
        park: Park,
        *,
        sign: bool,
    ) -> Publish:
        """The publish that parks a message; `sign` for a copy the service made (its headers are new)."""
        parked = _own_headers(headers)
        parked.pop(header_names.RETRY_TIER, None)
        if sign:
            parked = self.signer.sign(parked, body)
        parked[header_names.REASON] = park.reason[:MAX_REASON_LENGTH]
        parked[header_names.CAUSE] = park.cause
        parked[header_names.ORIGIN_EXCHANGE] = exchange
        parked[header_names.ORIGIN_ROUTING_KEY] = routing_key
        parked[header_names.PARKED_AT] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Publish(self.topology.dead_exchange, self.topology.dead_queue, body, parked)
