"""Handling one `received` message: route it to every destination, then ack it."""

from __future__ import annotations

import time
from typing import Protocol

from prometheus_client import Counter, Histogram

from karnak_processor.instance import Instance, read_instance
from karnak_processor.routing import Deliver, Reject, Router, Skip
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Delivery, Settlement, Verdict
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.errors import BlobMissing, BlobStoreError, BrokerUnavailable, EnvelopeError, InvalidInstance
from karnak_shared.logs import EventLogger
from karnak_shared.payload import read_payload, store_payload
from karnak_shared.retry import park
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


class ConfirmingPublisher(Protocol):
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, object] | None = None,
        *,
        mandatory: bool = True,
    ) -> None: ...


class Processor:
    """Routes received instances; every output is confirmed before the input is acked."""

    def __init__(
        self, router: Router, publisher: ConfirmingPublisher, topology: Topology, blobs: BlobStore, max_inline: int
    ) -> None:
        self._router = router
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
            part10 = read_payload(envelope, delivery.body, self._blobs)
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
        try:
            instance = read_instance(part10)
        except InvalidInstance as exc:
            return self._park(delivery, "invalid-instance", str(exc), envelope)
        if not self._router.knows(envelope.forward_node):
            return self._park(
                delivery, "unknown-forward-node", f"forward node {envelope.forward_node} is not configured", envelope
            )
        try:
            for decision in self._router.decide(envelope.forward_node, instance):
                if isinstance(decision, Deliver):
                    self._queue(envelope, instance, decision)
                    outcome = "queued"
                elif isinstance(decision, Reject):
                    self._reject(envelope, instance, decision)
                    outcome = "rejected"
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

    def _queue(self, envelope: Envelope, instance: Instance, decision: Deliver) -> None:
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
                "size": len(decision.part10),
                "attempt": 0,
                "study_instance_uid": instance.study_instance_uid,
                "series_instance_uid": instance.series_instance_uid,
                "display": instance.display_values(),
            }
        )
        queue = self._topology.send_queue(destination.queue_kind, destination.id)
        try:
            self._publisher.publish(self._topology.send_exchange, queue, body, outgoing.to_headers())
        except BrokerUnavailable:
            # Only this unconfirmed message's link goes: confirmed ones are in their queues and need theirs.
            if blob:
                self._delete_blob(blob)
            raise
        log.debug("instance.queued", **outgoing.log_fields())

    def _reject(self, envelope: Envelope, instance: Instance, decision: Reject) -> None:
        routed = envelope.model_copy(
            update={
                "study_instance_uid": instance.study_instance_uid,
                "series_instance_uid": instance.series_instance_uid,
                "display": instance.display_values(),
            }
        )
        event = TransferEvent.for_envelope(routed, "rejected", decision.destination.id, decision.reason)
        # Events nobody subscribes to yet are not an error: no `mandatory`.
        self._publisher.publish(self._topology.events_exchange, event.routing_key, event.to_body(), mandatory=False)
        log.info(
            "instance.rejected",
            reason=decision.reason,
            **{**envelope.log_fields(), "destination": decision.destination.id},
        )

    def _park(self, delivery: Delivery, cause: str, reason: str, envelope: Envelope | None = None) -> Verdict:
        try:
            park(
                self._publisher,  # type: ignore[arg-type]
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
