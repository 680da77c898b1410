"""Tells the services about new revisions from a background thread, so a write never waits for RabbitMQ.

Only the newest revision matters (a service applies the latest it finds), so a burst of writes becomes one
announcement; a failed one is logged and left to the services' own 30 s check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from karnak_shared.logs import EventLogger
from karnak_shared.revisions import Revision

log = EventLogger("karnak.console.announcer")


class RevisionAnnouncer:
    def __init__(self, notify: Callable[[Revision], None]) -> None:
        self._notify = notify
        self._pending: Revision | None = None
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="console-announcer", daemon=True)
        self._thread.start()

    def __call__(self, revision: Revision) -> None:
        with self._wake:
            if self._pending is None or revision.number > self._pending.number:
                self._pending = revision
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                revision, self._pending = self._pending, None
            assert revision is not None
            try:
                self._notify(revision)
                log.info("config.announced", revision=revision.number)
            except Exception as exc:  # noqa: BLE001 - pika's connector errors too; the services' check catches up
                log.warning("config.announce-failed", revision=revision.number, error=str(exc))
