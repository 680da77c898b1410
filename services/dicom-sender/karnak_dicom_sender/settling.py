"""Settling deliveries whose verdict waits for a confirm, off the thread that sends the next instance."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from karnak_shared.broker import Delivery, Settlement, Verdict
from karnak_shared.envelope import Envelope
from karnak_shared.errors import BrokerUnavailable, EnvelopeError
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.dicom-sender")


class SettleAfterConfirm:
    """Acks a delivered instance once its `transfer.sent` event is confirmed; requeues it if the event fails.

    A destination's worker hands the verdict over and starts its next C-STORE at once, instead of
    waiting a broker round trip per instance. Verdicts are settled in the order they come.
    """

    def __init__(self, settle: Callable[[Delivery, Settlement], None], delete_blob: Callable[[str], None]) -> None:
        self._settle = settle
        self._delete_blob = delete_blob
        self._pending: queue.Queue[tuple[Delivery, Verdict] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="settle-after-confirm", daemon=True)

    def start(self) -> SettleAfterConfirm:
        self._thread.start()
        return self

    def submit(self, delivery: Delivery, verdict: Verdict) -> None:
        """Settle `delivery` as `verdict` says once `verdict.after` is confirmed."""
        self._pending.put((delivery, verdict))

    def stop(self) -> None:
        """Settle what was handed over, then stop."""
        self._pending.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while (item := self._pending.get()) is not None:
            delivery, verdict = item
            try:
                self._settle_one(delivery, verdict)
            except Exception:  # a bug must not stop the settling of the others: the delivery comes back
                log.error("settlement.crashed", exc_info=True, queue=delivery.queue)

    def _settle_one(self, delivery: Delivery, verdict: Verdict) -> None:
        settlement, blob = verdict.settlement, verdict.delete_blob
        if verdict.after is not None:
            try:
                verdict.after.wait()
            except BrokerUnavailable as exc:
                log.warning("event.unpublished", reason=str(exc), **_log_fields(delivery))
                settlement, blob = Settlement.REQUEUE, None
        self._settle(delivery, settlement)
        if blob and settlement is Settlement.ACK:
            self._delete_blob(blob)


def _log_fields(delivery: Delivery) -> dict[str, str]:
    try:
        return Envelope.from_headers(delivery.headers).log_fields()
    except EnvelopeError:
        return {"queue": delivery.queue}
