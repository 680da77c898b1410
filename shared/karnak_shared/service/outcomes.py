"""What a handler says became of a message: the runner and `redelivery` turn it into broker actions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ack:
    """The work is done: acked once every publish the handling caused is confirmed; its blob then goes."""


@dataclass(frozen=True)
class Retry:
    """A transient failure: wait in the next delay tier and come back; parked once the tiers are used up."""

    reason: str


@dataclass(frozen=True)
class Park:
    """A permanent failure: the message goes to the dead-letter queue with its cause and reason, blob kept.

    `cause` is a short stable name (`missing-blob`, `invalid-instance`, `unauthenticated`...) for metrics
    and filters; `reason` says what happened in words (never patient data).
    """

    reason: str
    cause: str = "failed"


@dataclass(frozen=True)
class Requeue:
    """Give the message back to its queue now (a resource that is down for a moment, a broker hiccup)."""

    reason: str = ""


Outcome = Ack | Retry | Park | Requeue
