"""Progress of the long commands (`deid`, `pseudonyms import`, `dead replay`): a bar on a terminal, lines elsewhere.

On a terminal the operator sees tqdm's bar (count, rate, ETA). When standard error is not a terminal (CI,
a log file, `kubectl logs`) a bar would be noise, so one summary line is written every `every` items and
once at the end. Ctrl-C does not kill a long command half-way through an item: `StopRequest` turns
SIGINT/SIGTERM into a flag the command checks between items, so what was done stays done and the command
can say how far it got.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

from tqdm import tqdm


class Progress:
    """Counts the items of one long command and shows them as the output stream allows."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        unit: str = "item",
        every: int = 100,
        stream: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.every = max(1, every)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interactive = self._stream.isatty() if interactive is None else interactive
        self._started = time.monotonic()
        self._bar: Any = None
        if self._interactive:
            self._bar = tqdm(total=total, desc=what, unit=unit, file=self._stream, dynamic_ncols=True)

    def advance(self, count: int = 1) -> None:
        """Record `count` more items done."""
        before = self.done
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self.done // self.every > before // self.every:
            self._line()

    def set_total(self, total: int) -> None:
        """The total became known after the start (e.g. once a queue was drained)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _line(self, prefix: str = "") -> None:
        of = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and self.done < self.total and self.rate() > 0:
            eta = f", ETA {(self.total - self.done) / self.rate():.0f} s"
        print(f"{prefix}{self.what}: {self.done}{of} {self.unit}(s), {self.rate():.1f}/s{eta}", file=self._stream)
        self._stream.flush()

    def close(self, interrupted: bool = False) -> None:
        """End the display; an interrupted command says how far it got."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if interrupted:
            of = f" of {self.total}" if self.total is not None else ""
            print(f"{self.what}: interrupted after {self.done}{of} {self.unit}(s); those are done", file=self._stream)
            self._stream.flush()
        elif not self._interactive and self.done % self.every:
            self._line()


class StopRequest:
    """SIGINT/SIGTERM as a flag checked between items, instead of an exception in the middle of one."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Catch the signals while the block runs; restore the previous handlers after it."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self.requested = True

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
