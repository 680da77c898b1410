"""Workers of a STOW destination: a few threads sharing its batcher, each posting on a session of its own.

While one thread posts a batch and settles it (events, acks), the next forms and posts the following one,
so the server is never idle waiting for the gateway's bookkeeping.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from karnak_shared.broker import Delivery
from karnak_shared.logs import EventLogger
from karnak_stow_sender.batching import BatchLimits, StudyBatcher
from karnak_stow_sender.client import StowClient

log = EventLogger("karnak.stow-sender")
IDLE_POLL_SECONDS = 5.0


class DestinationWorker:
    """Runs `work(batch, client)` for one destination in `len(clients)` threads (one client each)."""

    def __init__(
        self, clients: list[StowClient], work: Callable[[list[Delivery], StowClient], None], limits: BatchLimits
    ) -> None:
        if not clients:
            raise ValueError("a destination worker needs at least one client")
        self.clients = clients
        self.destination_id = clients[0].destination_id
        self._work = work
        self._inbox: queue.Queue[Delivery | None] = queue.Queue()
        self._batcher = StudyBatcher(self._inbox, limits)
        self._threads = [
            threading.Thread(target=self._run, args=(client,), name=f"stow-{self.destination_id}-{n}", daemon=True)
            for n, client in enumerate(clients)
        ]

    def start(self) -> DestinationWorker:
        for thread in self._threads:
            thread.start()
        return self

    def submit(self, delivery: Delivery) -> None:
        self._inbox.put(delivery)

    def stop(self) -> None:
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, client: StowClient) -> None:
        while True:
            batch = self._batcher.next_batch(IDLE_POLL_SECONDS)
            if batch is None:
                break
            if not batch:
                continue
            try:
                self._work(batch, client)
            except Exception:  # a bug must not kill the worker; the handler requeues what it could not settle
                log.error("worker.crashed", exc_info=True, destination=self.destination_id)
        client.close()
