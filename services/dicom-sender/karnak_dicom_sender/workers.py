"""One worker thread per destination: deliveries to a destination go one after another over its link."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from karnak_dicom_sender.link import DestinationLink
from karnak_shared.broker import Delivery
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.dicom-sender")


class DestinationWorker:
    """Runs `work(delivery, link)` for one destination in its own thread; releases the link when idle."""

    def __init__(
        self, link: DestinationLink, work: Callable[[Delivery, DestinationLink], None], idle_seconds: float
    ) -> None:
        self.link = link
        self._work = work
        self._idle = idle_seconds
        self._inbox: queue.Queue[Delivery | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"send-{link.peer.destination_id}", daemon=True)

    def start(self) -> DestinationWorker:
        self._thread.start()
        return self

    def submit(self, delivery: Delivery) -> None:
        self._inbox.put(delivery)

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            try:
                delivery = self._inbox.get(timeout=self._idle)
            except queue.Empty:
                self.link.release_if_idle(self._idle)
                continue
            if delivery is None:
                break
            try:
                self._work(delivery, self.link)
            except Exception:
                log.error("worker.crashed", exc_info=True, destination=self.link.peer.destination_id)
        self.link.release()
