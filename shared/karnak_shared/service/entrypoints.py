"""Entrypoint declarations: what a service consumes and what it runs on a timer.

    class Processor(Service[Routes]):
        @consume(lambda config, topology: [topology.received_queue], message=InstanceMessage, workers=4)
        def route(self, message: InstanceMessage, work: Work[Routes]) -> Outcome: ...

The queues of a `consume` entrypoint are a function of the configuration (and the topology computed
from it), so the runner consumes a new destination's queue, and stops consuming a removed one, when
the configuration changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from karnak_shared.config import GatewayConfig
from karnak_shared.service.batching import BatchLimits
from karnak_shared.service.messages import MessageReader
from karnak_shared.topology import Topology

QueueSelector = Callable[[GatewayConfig, Topology], list[str]]
F = TypeVar("F", bound=Callable[..., Any])

_CONSUME = "__karnak_consume__"
_TIMER = "__karnak_timer__"


@dataclass(frozen=True)
class Batching:
    """How a batching consumer groups a queue's messages (see `karnak_shared.service.batching`).

    `limits(state)`: the size, weight and wait limits of the next batch, from the state (configuration)
    it starts on; `key(message)`: messages of one key go together (None: alone); `weight(message)`
    bounds a batch by another measure than its count (the bytes of a STOW request).
    """

    limits: Callable[[Any], BatchLimits]
    key: Callable[[Any], str | None] = lambda message: ""
    weight: Callable[[Any], int] = lambda message: 0


@dataclass(frozen=True)
class ConsumeSpec:
    """A `consume` declaration, read by the runner."""

    queues: QueueSelector
    message: MessageReader[Any]
    # Threads handling at once; per queue with `per_queue` or `batch`, where it may be read from the
    # state (`workers(state)`: a STOW destination's requests in flight) when the queue's threads start.
    workers: int | Callable[[Any], int] = 1
    # One set of `workers` threads per queue (a destination's messages go one after another), and an
    # `idle(queue, state)` call on the service after `idle_seconds` without a message for that queue.
    per_queue: bool = False
    idle_seconds: float | None = None
    batch: Batching | None = None
    # How many unacknowledged messages the broker hands over; None: the `broker.prefetch` setting.
    prefetch: Callable[[GatewayConfig], int] | None = None


@dataclass(frozen=True)
class TimerSpec:
    """A `timer` declaration: the method runs every `interval` seconds with the current state."""

    interval: float


def consume(
    queues: QueueSelector,
    *,
    message: MessageReader[Any],
    workers: int | Callable[[Any], int] = 1,
    per_queue: bool = False,
    idle_seconds: float | None = None,
    batch: Batching | None = None,
    prefetch: Callable[[GatewayConfig], int] | None = None,
) -> Callable[[F], F]:
    """Declare a handler of the messages of `queues(config, topology)`, read as `message`.

    The handler is called as `handler(message, work)` (with `batch`, `handler(messages, work)`) and
    returns an outcome (with `batch`, one per message, in order) or `work.defer()`.
    """
    spec = ConsumeSpec(queues, message, workers, per_queue, idle_seconds, batch, prefetch)

    def declare(handler: F) -> F:
        setattr(handler, _CONSUME, spec)
        return handler

    return declare


def timer(interval: float) -> Callable[[F], F]:
    """Declare a method the runner calls every `interval` seconds as `method(state)`."""

    def declare(method: F) -> F:
        setattr(method, _TIMER, TimerSpec(interval))
        return method

    return declare


def declared_consumers(service: object) -> list[tuple[str, ConsumeSpec]]:
    """(method name, declaration) of every `consume` entrypoint of a service, in name order."""
    return [
        (name, spec)
        for name in sorted(dir(type(service)))
        if isinstance(spec := getattr(getattr(type(service), name), _CONSUME, None), ConsumeSpec)
    ]


def declared_timers(service: object) -> list[tuple[str, TimerSpec]]:
    """(method name, declaration) of every `timer` entrypoint of a service."""
    return [
        (name, spec)
        for name in sorted(dir(type(service)))
        if isinstance(spec := getattr(getattr(type(service), name), _TIMER, None), TimerSpec)
    ]
