"""Handling one `received` message: route it to every destination, then ack it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prometheus_client import Counter, Histogram

from karnak_dicom.instance import Instance, read_instance
from karnak_processor.routing import Deliver, Fail, Later, Reject, Router, Skip
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import ConfirmingPublisher, Delivery, Settlement, Verdict
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.errors import (
    BlobMissing,
    BlobStoreError,
    BrokerUnavailable,
    EnvelopeError,
    InvalidInstance,
    PublishOutcomeUnknown,
)
from karnak_shared.logs import EventLogger
from karnak_shared.payload import payload_source, store_payload
from karnak_shared.retry import RetryPolicy, park, schedule_retry
from karnak_shared.topology import Topology

log = EventLogger("karnak.processor")

ROUTED = Counter(
    "karnak_instances_routed_total",
    "Routing decisions per destination: queued, rejected or disabled",
    ["forward_node", "destination", "outcome"],
)
PARKED = Counter("karnak_instances_parked_total", "Messages parked in the dead-letter queue", ["service", "cause"])
PROCESSING_SECONDS = Histogram(
    "karnak_processing_seconds",
    "Time to route one received instance to all its destinations",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class Processor:
    """Routes received instances; every output is confirmed before the input is acked."""

    def __init__(
        self,
        router: Router,
        publisher: ConfirmingPublisher,
        topology: Topology,
        blobs: BlobStore,
        max_inline: int,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._router = router
        self._policy = policy or RetryPolicy((5, 30, 120, 600, 3600))
        self._publisher = publisher
        self._topology = topology
        self._blobs = blobs
        self._max_inline = max_inline

    def handle(self, delivery: Delivery) -> Verdict:
        """Process one delivery and say how to settle it (and whether its received blob can go)."""
        started = time.perf_counter()
        try:
            envelope = Envelope.from_headers(delivery.headers)
        except EnvelopeError as exc:
            return self._park(delivery, "invalid-envelope", str(exc))
        try:
            source = payload_source(envelope, delivery.body, self._blobs)
            instance = _read_received(source)
        except BlobMissing as exc:
            if delivery.redelivered:
                # The received blob is deleted only after every output was confirmed and the ack sent:
                # a redelivery without its blob is a message whose ack was lost with the connection.
                log.warning("instance.already-routed", reason=str(exc), **envelope.log_fields())
                return Verdict(Settlement.ACK)
            return self._park(delivery, "missing-blob", str(exc), envelope)
        except BlobStoreError as exc:
            # Unreadable for now (I/O, permissions): try again rather than lose or park it.
            log.warning("instance.requeued", reason=str(exc), **envelope.log_fields())
            return Verdict(Settlement.REQUEUE)
        except InvalidInstance as exc:
            return self._park(delivery, "invalid-instance", str(exc), envelope)
        if not self._router.knows(envelope.forward_node):
            return self._park(
                delivery, "unknown-forward-node", f"forward node {envelope.forward_node} is not configured", envelope
            )
        try:
            # A message parked or retried for one destination names it: only that destination is redone.
            for decision in self._router.decide(envelope.forward_node, instance, only=envelope.destination):
                if isinstance(decision, Deliver):
                    self._queue(envelope, decision)
                    outcome = "queued"
                elif isinstance(decision, Reject):
                    self._reject(envelope, instance, decision)
                    outcome = "rejected"
                elif isinstance(decision, Fail):
                    self._fail(delivery, envelope, instance, decision)
                    outcome = "failed"
                elif isinstance(decision, Later):
                    self._retry_later(delivery, envelope, decision)
                    outcome = "retried"
                else:
                    assert isinstance(decision, Skip)
                    outcome = "disabled"
                ROUTED.labels(envelope.forward_node, decision.destination.id, outcome).inc()
        except (BrokerUnavailable, BlobStoreError) as exc:
            # Nothing is acked: the message comes back, and the destinations already queued may be queued
            # again (senders are idempotent per SOP Instance UID and destination).
            log.warning("instance.requeued", reason=str(exc), **envelope.log_fields())
            return Verdict(Settlement.REQUEUE)
        PROCESSING_SECONDS.observe(time.perf_counter() - started)
        return Verdict(Settlement.ACK, delete_blob=envelope.blob)

    def delete_blob(self, reference: str) -> None:
        """Remove the received blob of a routed message: each destination has its own link."""
        self._delete_blob(reference)

    def _queue(self, envelope: Envelope, decision: Deliver) -> None:
        destination = decision.destination
        blob: str | None
        if decision.unchanged and envelope.blob:
            body, blob = b"", self._blobs.link(envelope.blob)
        else:
            body, blob = store_payload(decision.part10, self._blobs, self._max_inline)
        outgoing = envelope.model_copy(
            update={
                "destination": destination.id,
                "blob": blob,
                "size": decision.size,
                "attempt": 0,
                "sop_instance_uid": decision.sop_instance_uid,
                "study_instance_uid": decision.study_instance_uid,
                "series_instance_uid": decision.series_instance_uid,
                "transfer_syntax": decision.transfer_syntax,
                "display": decision.display,
                "kheops_albums": decision.kheops_albums,
                "origin": decision.origin,
                "syntax_fallback": decision.syntax_fallback,
            }
        )
        queue = self._topology.send_queue(destination.queue_kind, destination.id)
        try:
            self._publisher.publish(self._topology.send_exchange, queue, body, outgoing.to_headers())
        except BrokerUnavailable as exc:
            # Only this unconfirmed message's link goes: confirmed ones are in their queues and need theirs,
            # and so may this one when its confirm was lost rather than refused.
            if blob and not isinstance(exc, PublishOutcomeUnknown):
                self._delete_blob(blob)
            raise
        if decision.syntax_fallback:
            log.info("instance.syntax-fallback", reason=decision.syntax_fallback, **outgoing.log_fields())
        log.debug("instance.queued", **outgoing.log_fields())

    def _reported(self, envelope: Envelope, instance: Instance, destination_id: str) -> Envelope:
        """The envelope an event about this destination carries (identifiers safe for that destination)."""
        route = self._router.route(envelope.forward_node, destination_id)
        display: dict[str, str] = {}
        sop = study = series = ""
        origin = None
        if route is not None:
            sop, study, series, display = route.transformation.identifiers_for_events(instance)
            origin = route.origin(instance, display)
        return envelope.model_copy(
            update={
                "sop_instance_uid": sop or envelope.sop_instance_uid,
                "study_instance_uid": study,
                "series_instance_uid": series,
                "display": display,
                "origin": origin,
            }
        )

    def _event(self, envelope: Envelope, kind: Literal["failed", "rejected"], destination_id: str, reason: str) -> None:
        event = TransferEvent.for_envelope(envelope, kind, destination_id, reason)
        # Events nobody subscribes to yet are not an error: no `mandatory`.
        self._publisher.publish(self._topology.events_exchange, event.routing_key, event.to_body(), mandatory=False)

    def _reject(self, envelope: Envelope, instance: Instance, decision: Reject) -> None:
        destination_id = decision.destination.id
        self._event(self._reported(envelope, instance, destination_id), "rejected", destination_id, decision.reason)
        log.info(
            "instance.rejected", reason=decision.reason, **{**envelope.log_fields(), "destination": destination_id}
        )

    def _own_copy(self, delivery: Delivery, envelope: Envelope, destination_id: str) -> tuple[dict[str, object], bytes]:
        """Headers and body of a copy of the received message for one destination, with its own blob link."""
        blob = self._blobs.link(envelope.blob) if envelope.blob else None
        copy = envelope.model_copy(update={"destination": destination_id, "blob": blob})
        return copy.to_headers(), delivery.body

    def _fail(self, delivery: Delivery, envelope: Envelope, instance: Instance, decision: Fail) -> None:
        """Park the received instance for this destination alone; `karnak dead replay` redoes only it."""
        destination_id = decision.destination.id
        headers, body = self._own_copy(delivery, envelope, destination_id)
        park(
            self._publisher,
            self._topology,
            exchange=self._topology.ingest_exchange,
            routing_key=self._topology.received_queue,
            headers=headers,
            body=body,
            reason=decision.reason,
        )
        self._event(self._reported(envelope, instance, destination_id), "failed", destination_id, decision.reason)
        PARKED.labels("processor", "transformation-failed").inc()
        log.error(
            "instance.parked",
            cause="transformation-failed",
            reason=decision.reason,
            **{**envelope.log_fields(), "destination": destination_id},
        )

    def _retry_later(self, delivery: Delivery, envelope: Envelope, decision: Later) -> None:
        """Send the instance through the delay queues for the one destination whose copy must wait."""
        destination_id = decision.destination.id
        # Only a copy already retried for this destination counts its attempts.
        attempt = envelope.attempt if envelope.destination == destination_id else 0
        delay = self._policy.delay_for(attempt)
        headers, body = self._own_copy(delivery, envelope, destination_id)
        copy = Envelope.from_headers(headers).model_copy(update={"attempt": attempt})
        if delay is None:
            park(
                self._publisher,
                self._topology,
                exchange=self._topology.ingest_exchange,
                routing_key=self._topology.received_queue,
                headers=copy.to_headers(),
                body=body,
                reason=f"gave up after {attempt + 1} attempts: {decision.reason}",
            )
            PARKED.labels("processor", "retries-exhausted").inc()
        else:
            schedule_retry(
                self._publisher,
                self._topology,
                self._topology.received_queue,
                copy,
                body,
                delay,
            )
        log.warning(
            "instance.retry-scheduled" if delay is not None else "instance.parked",
            reason=decision.reason,
            delay=delay or 0,
            **{**envelope.log_fields(), "destination": destination_id},
        )

    def _park(self, delivery: Delivery, cause: str, reason: str, envelope: Envelope | None = None) -> Verdict:
        try:
            park(
                self._publisher,
                self._topology,
                exchange=self._topology.ingest_exchange,
                routing_key=self._topology.received_queue,
                headers=delivery.headers,
                body=delivery.body,
                reason=reason,
            )
        except BrokerUnavailable:
            return Verdict(Settlement.REQUEUE)
        PARKED.labels("processor", cause).inc()
        fields = envelope.log_fields() if envelope else {}
        log.error("instance.parked", cause=cause, reason=reason, **fields)
        # The parked copy keeps its blob reference, so the blob stays for `karnak dead replay`.
        return Verdict(Settlement.ACK)

    def _delete_blob(self, reference: str) -> None:
        try:
            self._blobs.delete(reference)
        except BlobStoreError as exc:
            log.warning("blob.delete-failed", blob=reference, reason=str(exc))


def _read_received(source: bytes | Path) -> Instance:
    """`read_instance`, with an unreadable blob file said as the blob store says it (`BlobMissing` when gone)."""
    try:
        return read_instance(source)
    except OSError as exc:
        if not isinstance(source, Path):
            raise
        reference = f"{source.parent.name}/{source.name}"  # as the blob store names it
        if isinstance(exc, FileNotFoundError):
            raise BlobMissing(f"blob {reference} is missing from {source.parent.parent}") from None
        raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None
