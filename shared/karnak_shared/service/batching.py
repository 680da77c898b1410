"""Forming batches for a batching entrypoint: up to N messages of one key, waiting a little for the rest.

A batch starts with the oldest message waiting; messages with the same key (a STOW destination's study)
join it until it is full, too heavy (bytes), or `max_wait` has passed since it started. Messages of other
keys wait, in arrival order, for the batches after it, so a key never holds another back longer than one
batch. A message without a key (None) goes alone.

Several worker threads share one batcher: one forms its batch while the others handle theirs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")  # what the inbox holds (a delivery)
T = TypeVar("T")  # what a batch holds (a delivery read into a message)


@dataclass(frozen=True)
class BatchLimits:
    """How large a batch may grow: `size` messages, `max_weight` (0: no limit), `max_wait` seconds."""

    size: int
    max_wait: float
    max_weight: int = 0


class Batcher(Generic[R, T]):
    """Takes items from an inbox (None there means stop) and hands out batches of one key.

    `admit` turns an inbox item into a batch item, or None when it is settled already (parked unread);
    `limits` is read for each batch, so a new configuration's limits apply to the next one.
    """

    def __init__(
        self,
        inbox: queue.Queue[R | None],
        admit: Callable[[R], T | None],
        key: Callable[[T], str | None],
        weight: Callable[[T], int],
        limits: Callable[[], BatchLimits],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inbox = inbox
        self._admit = admit
        self._key = key
        self._weight = weight
        self._limits = limits
        self._clock = clock
        self._waiting: deque[T] = deque()
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def next_batch(self, idle_timeout: float | None = None) -> list[T] | None:
        """The next batch; [] when nothing came within `idle_timeout`; None once stopped and drained."""
        with self._lock:
            return self._next_batch(idle_timeout)

    def _take(self, timeout: float | None) -> T | None:
        """The next admitted item within `timeout` (raises `queue.Empty`); None on the stop mark."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - self._clock())
            item = (
                self._inbox.get(timeout=remaining) if remaining is None or remaining > 0 else self._inbox.get_nowait()
            )
            if item is None:
                self._stopping = True
                return None
            admitted = self._admit(item)
            if admitted is not None:
                return admitted

    def _next_batch(self, idle_timeout: float | None) -> list[T] | None:
        limits = self._limits()
        if not self._waiting:
            if self._stopping:
                return None
            try:
                item = self._take(idle_timeout)
            except queue.Empty:
                return []
            if item is None:
                return None
            self._waiting.append(item)
        first = self._waiting.popleft()
        batch = [first]
        key = self._key(first)
        total = self._weight(first)
        if key is None:
            return batch  # nothing to group it with

        def fits(candidate: T) -> bool:
            return self._key(candidate) == key and (
                not limits.max_weight or total + self._weight(candidate) <= limits.max_weight
            )

        # The ones already waiting first, in order.
        for candidate in list(self._waiting):
            if len(batch) >= limits.size:
                return batch
            if fits(candidate):
                self._waiting.remove(candidate)
                batch.append(candidate)
                total += self._weight(candidate)
        deadline = self._clock() + limits.max_wait
        while len(batch) < limits.size and not self._stopping:
            try:
                item = self._take(max(0.0, deadline - self._clock()))
            except queue.Empty:
                break
            if item is None:
                break
            if fits(item):
                batch.append(item)
                total += self._weight(item)
            else:
                self._waiting.append(item)
                if self._key(item) == key:
                    break  # the batch is as large as it may grow in weight
        return batch
