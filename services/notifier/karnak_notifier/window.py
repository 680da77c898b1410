"""Interval windows per destination (DESIGN.md section 10).

A destination's window opens at its first event and closes `interval` seconds later; an event arriving
at or after that moment opens the next window. Each event travels with an opaque token (for the service,
the broker delivery to acknowledge once the window's email is sent), so this module knows nothing of
AMQP and is driven by the clock the caller passes in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from karnak_shared.envelope import TransferEvent

T = TypeVar("T")


@dataclass(frozen=True)
class Held(Generic[T]):
    """An event in a window and the token that settles it."""

    event: TransferEvent
    token: T


@dataclass
class Window(Generic[T]):
    """The events of one destination between `opened_at` and `closes_at` (clock seconds)."""

    destination: str
    opened_at: float
    closes_at: float
    held: list[Held[T]] = field(default_factory=list)


class Windows(Generic[T]):
    """The open window of each destination, and those closed but not yet collected."""

    def __init__(self, intervals: Mapping[str, float]) -> None:
        self._intervals = dict(intervals)
        self._open: dict[str, Window[T]] = {}
        self._closed: list[Window[T]] = []

    def accepts(self, destination: str) -> bool:
        """Whether events of this destination are aggregated (it has notifications)."""
        return destination in self._intervals

    def add(self, event: TransferEvent, token: T, now: float) -> bool:
        """Put an event in its destination's window, opening one if none is open at `now` (then True)."""
        destination = event.destination
        interval = self._intervals[destination]
        window = self._open.get(destination)
        if window is not None and now >= window.closes_at:
            self._closed.append(window)
            window = None
        opened = window is None
        if window is None:
            window = Window(destination, opened_at=now, closes_at=now + interval)
            self._open[destination] = window
        window.held.append(Held(event, token))
        return opened

    def close_due(self, now: float) -> list[Window[T]]:
        """Take every window whose time is up at `now`, earliest first."""
        for destination, window in list(self._open.items()):
            if now >= window.closes_at:
                self._closed.append(window)
                del self._open[destination]
        due, self._closed = sorted(self._closed, key=lambda w: w.closes_at), []
        return due

    def next_deadline(self) -> float | None:
        """When the next window closes (already past if a closed one waits to be collected)."""
        deadlines = [w.closes_at for w in (*self._open.values(), *self._closed)]
        return min(deadlines) if deadlines else None

    def discard_all(self) -> int:
        """Forget every window (their tokens can no longer settle anything); return the events dropped."""
        dropped = sum(len(w.held) for w in (*self._open.values(), *self._closed))
        self._open.clear()
        self._closed.clear()
        return dropped

    def held_count(self, destination: str) -> int:
        """Events of a destination waiting in windows (open or closed and not yet collected)."""
        return sum(len(w.held) for w in (*self._open.values(), *self._closed) if w.destination == destination)

    def is_open(self, destination: str) -> bool:
        return destination in self._open
