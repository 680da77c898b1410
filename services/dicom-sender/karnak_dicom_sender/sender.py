"""Handling one send message: C-STORE it, then ack, retry through the delay queues, or park it."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Histogram

from karnak_dicom_sender.link import DestinationLink
from karnak_dicom_sender.status import Outcome
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Delivery, Settlement, SubmittingPublisher, Verdict
from karnak_shared.envelope import Envelope
from karnak_shared.errors import (
    BlobMissing,
    BlobStoreError,
    BrokerUnavailable,
    DeliveryError,
    EnvelopeError,
    TransientDeliveryError,
)
from karnak_shared.logs import EventLogger
from karnak_shared.retry import RetryPolicy, SenderFailures
from karnak_shared.sender_metrics import LATENCY_BUCKETS, SENT, SENT_BYTES, TRANSIT_SECONDS
from karnak_shared.topology import Topology

log = EventLogger("karnak.dicom-sender")

DELIVERY_SECONDS = Histogram(
    "karnak_delivery_seconds",
    "Time of one C-STORE (association set-up included)",
    ["destination"],
    buckets=LATENCY_BUCKETS,
)

# After a destination could not be reached, its next messages go straight to the delay queues for this
# long instead of each trying to associate: a refused connection costs pynetdicom 0.1 s and a host that
# does not answer the whole ACSE timeout, so a backlog would crawl through the worker one failed attempt
# at a time, waiting in the destination's queue rather than in the delay queues.
UNREACHABLE_HOLD_SECONDS = 1.0


class DicomSender:
    """Delivers messages of the dicom send queues through per-destination links."""

    def __init__(
        self, publisher: SubmittingPublisher, topology: Topology, blobs: BlobStore, policy: RetryPolicy
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._blobs = blobs
        self._failures = SenderFailures(
            publisher,
            topology,
            policy,
            "dicom",
            lambda destination, outcome: SENT.labels(destination, outcome).inc(),
            log,
        )
        self._unreachable: dict[str, tuple[float, str]] = {}  # destination -> (no attempt until, why)

    def handle(self, delivery: Delivery, link: DestinationLink) -> Verdict:
        """Deliver one message over `link` and say how to settle it."""
        try:
            envelope = Envelope.from_headers(delivery.headers)
        except EnvelopeError as exc:
            return self._failures.park(delivery, None, f"invalid envelope: {exc}")
        started = time.perf_counter()
        held = self._held(link.peer.destination_id)
        try:
            with self._payload_file(envelope, delivery.body) as path:
                if held is not None:
                    raise TransientDeliveryError(held)
                outcome = link.store(path, envelope.sop_class_uid, envelope.sop_instance_uid, envelope.transfer_syntax)
        except BlobMissing as exc:
            # Each send message has a blob of its own, deleted only once that message was delivered: a
            # copy arriving without it is a duplicate (at-least-once delivery) of a delivered message.
            SENT.labels(link.peer.destination_id, "duplicate").inc()
            log.warning("instance.duplicate-skipped", reason=str(exc), **envelope.log_fields())
            return Verdict(Settlement.ACK)
        except BlobStoreError as exc:
            return self._failures.park(delivery, envelope, str(exc))
        except DeliveryError as exc:
            if exc.transient and held is None and not link.is_open:
                self._unreachable[link.peer.destination_id] = (time.monotonic() + UNREACHABLE_HOLD_SECONDS, exc.reason)
            return self._failures.failed(delivery, envelope, exc)
        destination = link.peer.destination_id
        DELIVERY_SECONDS.labels(destination).observe(time.perf_counter() - started)
        TRANSIT_SECONDS.labels(destination).observe(max(0.0, time.time() - envelope.received_at))
        SENT.labels(destination, "sent").inc()
        SENT_BYTES.labels(destination).inc(envelope.size)
        reason = "stored with a warning status" if outcome is Outcome.WARNING else None
        try:
            # The next instance goes out while RabbitMQ confirms this event; the delivery is acked only
            # after the confirm (`SettleAfterConfirm`), and requeued if the event is refused: a second
            # C-STORE of the same instance is harmless, a missing event in the notification is not.
            exchange, routing_key, body = self._failures.event_message(envelope, "sent", reason)
            confirm = self._publisher.submit(exchange, routing_key, body, mandatory=False)
        except BrokerUnavailable as exc:
            log.warning("event.unpublished", reason=str(exc), **envelope.log_fields())
            return Verdict(Settlement.REQUEUE)
        log.debug("instance.sent", **envelope.log_fields())
        return Verdict(Settlement.ACK, delete_blob=envelope.blob, after=confirm)

    def delete_blob(self, reference: str) -> None:
        """Delete a delivered message's blob once its ack is on its way (a retried or parked one keeps it)."""
        try:
            self._blobs.delete(reference)
        except BlobStoreError as exc:
            log.warning("blob.delete-failed", blob=reference, reason=str(exc))

    def _held(self, destination: str) -> str | None:
        """Why no attempt is made now for a destination found unreachable a moment ago, else None."""
        until, reason = self._unreachable.get(destination, (0.0, ""))
        if time.monotonic() >= until:
            return None
        return f"{reason} (no new attempt for {UNREACHABLE_HOLD_SECONDS:g} s)"

    # --- failures ----------------------------------------------------------------------------------

    @contextmanager
    def _payload_file(self, envelope: Envelope, body: bytes) -> Iterator[Path]:
        """A file holding the instance: its blob, or a temporary copy of an inline body."""
        if envelope.blob:
            path = self._blobs.path(envelope.blob)
            if not path.exists():
                raise BlobMissing(f"blob {envelope.blob} is missing from {self._blobs.root}")
            yield path
            return
        if not body:
            raise BlobStoreError("message has neither a body nor a blob reference")
        fd, name = tempfile.mkstemp(prefix="karnak-", suffix=".dcm", dir=_scratch_dir())
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(body)
            yield Path(name)
        finally:
            os.unlink(name)


def _scratch_dir() -> str | None:
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
