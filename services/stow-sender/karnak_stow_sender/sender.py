"""Handling a batch of send messages: one STOW-RS request, then each instance settled on its own.

An instance the server stored is acked (and its blob deleted) after its `transfer.sent` event and, for a
destination with Kheops albums, the `kheops.share` messages of its series are confirmed. One that failed
transiently goes to the delay queues with its own attempt count; one refused for good, or out of attempts,
is parked with the reason and reported by a `transfer.failed` event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Histogram

from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import ConfirmingPublisher, Delivery, Settlement, Verdict
from karnak_shared.envelope import SHARE_ROUTING_KEY, Envelope, ShareRequest
from karnak_shared.errors import (
    BlobMissing,
    BlobStoreError,
    BrokerUnavailable,
    DeliveryError,
    EnvelopeError,
    InvalidInstance,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from karnak_shared.logs import EventLogger
from karnak_shared.payload import read_payload
from karnak_shared.retry import SenderFailures
from karnak_shared.sender_metrics import LATENCY_BUCKETS, SENT, SENT_BYTES, TRANSIT_SECONDS
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology
from karnak_stow_sender.response import InstanceResult, Outcome, StowResponse, settle

log = EventLogger("karnak.stow-sender")

REQUESTS = Counter(
    "karnak_stow_requests_total",
    "STOW-RS requests per destination and HTTP status ('error' when no answer came)",
    ["destination", "status"],
)
BATCH_INSTANCES = Histogram(
    "karnak_stow_batch_instances",
    "Instances per STOW-RS request",
    ["destination"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
DELIVERY_SECONDS = Histogram(
    "karnak_stow_request_seconds",
    "Time of one STOW-RS request (a whole batch)",
    ["destination"],
    buckets=LATENCY_BUCKETS,
)
SHARES_REQUESTED = Counter(
    "karnak_kheops_share_requests_total",
    "kheops.share messages published per destination (one per series and album)",
    ["destination"],
)


class StowTransport(Protocol):
    """What the sender needs from a destination's HTTP client (`StowClient`)."""

    destination_id: str
    where: str

    def post(self, parts: list[bytes]) -> StowResponse: ...


@dataclass(frozen=True)
class _Instance:
    position: int
    delivery: Delivery
    envelope: Envelope
    part10: bytes

    @property
    def uid(self) -> str:
        return self.envelope.sop_instance_uid


class StowSender:
    """Delivers batches from the stow send queues and says how to settle each delivery."""

    def __init__(
        self, publisher: ConfirmingPublisher, topology: Topology, blobs: BlobStore, policy: RetryPolicy
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._blobs = blobs
        self._failures = SenderFailures(
            publisher,
            topology,
            policy,
            "stow",
            lambda destination, outcome: SENT.labels(destination, outcome).inc(),
            log,
        )

    def handle_batch(self, deliveries: list[Delivery], transport: StowTransport) -> list[tuple[Delivery, Verdict]]:
        """Send `deliveries` (one study, one destination) in one request; one verdict per delivery, in order."""
        verdicts: dict[int, Verdict] = {}
        instances: list[_Instance] = []
        for position, delivery in enumerate(deliveries):
            try:
                envelope = Envelope.from_headers(delivery.headers)
            except EnvelopeError as exc:
                verdicts[position] = self._failures.park(delivery, None, f"invalid envelope: {exc}")
                continue
            try:
                part10 = read_payload(envelope, delivery.body, self._blobs)
            except BlobMissing as exc:
                # Each send message has a blob of its own, deleted once it was delivered: a copy arriving
                # without it is a duplicate (at-least-once delivery) of a delivered message.
                SENT.labels(transport.destination_id, "duplicate").inc()
                log.warning("instance.duplicate-skipped", reason=str(exc), **envelope.log_fields())
                verdicts[position] = Verdict(Settlement.ACK)
                continue
            except (BlobStoreError, InvalidInstance) as exc:
                verdicts[position] = self._failures.park(delivery, envelope, str(exc))
                continue
            instances.append(_Instance(position, delivery, envelope, part10))
        if instances:
            results = self._deliver(instances, transport)
            verdicts.update(self._settle(instances, results, transport))
        return [(delivery, verdicts[position]) for position, delivery in enumerate(deliveries)]

    def delete_blob(self, reference: str) -> None:
        """Delete a delivered message's blob once its ack is on its way (a retried or parked one keeps it)."""
        try:
            self._blobs.delete(reference)
        except BlobStoreError as exc:
            log.warning("blob.delete-failed", blob=reference, reason=str(exc))

    # --- the request -------------------------------------------------------------------------------

    def _deliver(self, instances: list[_Instance], transport: StowTransport) -> dict[str, InstanceResult]:
        # A duplicate delivery of an instance already in the batch is sent once and settled like it.
        parts: dict[str, bytes] = {}
        for instance in instances:
            parts.setdefault(instance.uid, instance.part10)
        status, results = self._post(parts, transport)
        if status == 413 and len(parts) > 1:
            # Too large for the server or a proxy in front of it (e.g. nginx's client_max_body_size): one
            # instance per request instead.
            log.warning("stow.batch-too-large", destination=transport.destination_id, instances=len(parts))
            results = {}
            for uid, part in parts.items():
                results.update(self._post({uid: part}, transport)[1])
        return results

    def _post(self, parts: dict[str, bytes], transport: StowTransport) -> tuple[int | None, dict[str, InstanceResult]]:
        destination = transport.destination_id
        BATCH_INSTANCES.labels(destination).observe(len(parts))
        started = time.perf_counter()
        try:
            response = transport.post(list(parts.values()))
        except TransientDeliveryError as exc:
            REQUESTS.labels(destination, "error").inc()
            return None, dict.fromkeys(parts, InstanceResult(Outcome.TRANSIENT, exc.reason))
        DELIVERY_SECONDS.labels(destination).observe(time.perf_counter() - started)
        REQUESTS.labels(destination, str(response.status)).inc()
        return response.status, settle(response, parts, transport.where)

    # --- settling ----------------------------------------------------------------------------------

    def _settle(
        self, instances: list[_Instance], results: dict[str, InstanceResult], transport: StowTransport
    ) -> dict[int, Verdict]:
        verdicts: dict[int, Verdict] = {}
        stored: dict[tuple[str, str], list[tuple[_Instance, str | None]]] = {}
        for instance in instances:
            result = results[instance.uid]
            if result.outcome is Outcome.STORED:
                key = (instance.envelope.study_instance_uid or "", instance.envelope.series_instance_uid or "")
                stored.setdefault(key, []).append((instance, result.reason))
            elif result.outcome is Outcome.TRANSIENT:
                error: DeliveryError = TransientDeliveryError(result.reason or "transient failure")
                verdicts[instance.position] = self._failures.failed(instance.delivery, instance.envelope, error)
            else:
                error = PermanentDeliveryError(result.reason or "refused by the destination")
                verdicts[instance.position] = self._failures.failed(instance.delivery, instance.envelope, error)
        for (study, series), group in stored.items():
            try:
                self._request_shares(study, series, [instance for instance, _ in group], transport.destination_id)
            except BrokerUnavailable as exc:
                # Stored, but the sharer cannot be told: requeue; sending the instances again is harmless.
                for instance, _ in group:
                    log.warning("kheops.share-unpublished", reason=str(exc), **instance.envelope.log_fields())
                    verdicts[instance.position] = Verdict(Settlement.REQUEUE)
                continue
            for instance, reason in group:
                verdicts[instance.position] = self._sent(instance, reason, transport.destination_id)
        return verdicts

    def _request_shares(self, study: str, series: str, instances: Iterable[_Instance], destination: str) -> None:
        albums: set[int] = set()
        forward_node = ""
        for instance in instances:
            albums.update(instance.envelope.kheops_albums)
            forward_node = instance.envelope.forward_node
        if not albums:
            return
        if not study or not series:
            log.warning("kheops.share-impossible", destination=destination, reason="no study or series UID")
            return
        for album in sorted(albums):
            request = ShareRequest(
                destination=destination,
                album=album,
                study_instance_uid=study,
                series_instance_uid=series,
                forward_node=forward_node,
            )
            self._publisher.publish(
                self._topology.events_exchange, SHARE_ROUTING_KEY, request.to_body(), request.to_headers()
            )
            SHARES_REQUESTED.labels(destination).inc()

    def _sent(self, instance: _Instance, reason: str | None, destination: str) -> Verdict:
        envelope = instance.envelope
        try:
            self._failures.event(envelope, "sent", reason)
        except BrokerUnavailable as exc:
            # Delivered, but the event cannot be published: requeue; a second STOW of the same instance is
            # harmless, a missing event in the notification is not.
            log.warning("event.unpublished", reason=str(exc), **envelope.log_fields())
            return Verdict(Settlement.REQUEUE)
        SENT.labels(destination, "sent").inc()
        SENT_BYTES.labels(destination).inc(len(instance.part10))
        TRANSIT_SECONDS.labels(destination).observe(max(0.0, time.time() - envelope.received_at))
        if reason:
            log.info("instance.sent-with-warning", reason=reason, **envelope.log_fields())
        else:
            log.debug("instance.sent", **envelope.log_fields())
        return Verdict(Settlement.ACK, delete_blob=envelope.blob)
