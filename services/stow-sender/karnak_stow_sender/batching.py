"""Forming STOW-RS batches: up to N deliveries of one study, waiting a little for the rest of the study.

A batch starts with the oldest delivery waiting; deliveries of the same study join it until it is full,
too large, or `max_wait` has passed since it started. Deliveries of other studies wait, in arrival order,
for the batches after it, so a study never holds another back longer than one batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from karnak_shared.broker import Delivery

STUDY_HEADER = "karnak-study-instance-uid"
SIZE_HEADER = "karnak-size"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def study_of(delivery: Delivery) -> str | None:
    """The Study Instance UID a send message carries in its envelope (None when it has none)."""
    return _text(delivery.headers.get(STUDY_HEADER))


def size_of(delivery: Delivery) -> int:
    """The size of the instance a send message carries, from its envelope (its body when not given)."""
    try:
        return int(_text(delivery.headers.get(SIZE_HEADER)) or 0) or len(delivery.body)
    except ValueError:
        return len(delivery.body)


@dataclass
class BatchLimits:
    size: int
    max_wait: float
    max_bytes: int


class StudyBatcher:
    """Takes deliveries from an inbox (None there means stop) and hands out batches of one study.

    Several threads may share one batcher: one forms its batch while the others post theirs.
    """

    def __init__(
        self,
        inbox: queue.Queue[Delivery | None],
        limits: BatchLimits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inbox = inbox
        self._limits = limits
        self._clock = clock
        self._waiting: deque[Delivery] = deque()
        self._stopping = False
        self._lock = threading.Lock()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def next_batch(self, idle_timeout: float | None = None) -> list[Delivery] | None:
        """The next batch; [] when nothing came within `idle_timeout`; None once stopped and drained."""
        with self._lock:
            return self._next_batch(idle_timeout)

    def _next_batch(self, idle_timeout: float | None) -> list[Delivery] | None:
        if not self._waiting:
            if self._stopping:
                return None
            try:
                item = self._inbox.get(timeout=idle_timeout)
            except queue.Empty:
                return []
            if item is None:
                self._stopping = True
                return None
            self._waiting.append(item)
        first = self._waiting.popleft()
        batch = [first]
        study = study_of(first)
        total = size_of(first)
        if study is None:
            return batch  # nothing to group it with

        def fits(candidate: Delivery) -> bool:
            return study_of(candidate) == study and total + size_of(candidate) <= self._limits.max_bytes

        # The ones already waiting first, in order.
        for candidate in list(self._waiting):
            if len(batch) >= self._limits.size:
                return batch
            if fits(candidate):
                self._waiting.remove(candidate)
                batch.append(candidate)
                total += size_of(candidate)
        deadline = self._clock() + self._limits.max_wait
        while len(batch) < self._limits.size and not self._stopping:
            remaining = deadline - self._clock()
            try:
                item = self._inbox.get(timeout=remaining) if remaining > 0 else self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            if fits(item):
                batch.append(item)
                total += size_of(item)
            else:
                self._waiting.append(item)
                if study_of(item) == study:
                    break  # the batch is as large as it may grow in bytes
        return batch
