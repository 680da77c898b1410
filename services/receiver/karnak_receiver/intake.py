"""Taking in one instance: store its bytes durably, publish it, and choose the C-STORE status."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from karnak_shared.blobstore import BlobStore, PendingBlob
from karnak_shared.broker import PendingConfirm
from karnak_shared.envelope import Envelope
from karnak_shared.errors import BlobStoreError, BrokerUnavailable, PublishOutcomeUnknown
from karnak_shared.logs import EventLogger
from karnak_shared.service.authentication import digest_of
from karnak_shared.service.providers import SignedPublisher
from karnak_shared.topology import Topology

log = EventLogger("karnak.receiver")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700

RECEIVED = Counter(
    "karnak_instances_received_total",
    "Instances received by C-STORE, by forward node and outcome",
    ["forward_node", "outcome"],
)
RECEIVED_BYTES = Counter("karnak_received_bytes_total", "Bytes of instances received", ["forward_node"])
INTAKE_SECONDS = Histogram(
    "karnak_intake_seconds",
    "Time from a C-STORE's dataset in hand to its answer (store, publish, confirm)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True)
class ReceivedInstance:
    """What the listener knows of a C-STORE request, without decoding its dataset."""

    forward_node: str
    calling_ae: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    # The Part 10 bytes, in parts: the file meta written for the request, then the dataset as received (a
    # 300 MB dataset is stored from pynetdicom's own buffer, not copied once more to join the two).
    part10: tuple[bytes, ...]

    @property
    def size(self) -> int:
        """Length of the Part 10 bytes."""
        return sum(len(part) for part in self.part10)


class Intake:
    """Puts received instances on the `received` queue; answers Success only after the confirm."""

    def __init__(self, publisher: SignedPublisher, topology: Topology, blobs: BlobStore, max_inline_bytes: int) -> None:
        self._publisher = publisher
        self._topology = topology
        self._blobs = blobs
        self._max_inline = max_inline_bytes

    def take(self, instance: ReceivedInstance) -> int:
        """Store and publish one instance; return the DICOM status for its C-STORE response."""
        started = time.perf_counter()
        blob: PendingBlob | None = None
        confirm: PendingConfirm | None = None
        try:
            body = b""
            if instance.size <= self._max_inline:
                body = b"".join(instance.part10)
            else:
                blob = self._blobs.write(instance.part10)
            envelope = Envelope(
                forward_node=instance.forward_node,
                calling_ae=instance.calling_ae,
                sop_class_uid=instance.sop_class_uid,
                sop_instance_uid=instance.sop_instance_uid,
                transfer_syntax=instance.transfer_syntax,
                blob=blob.reference if blob else None,
                # The message is signed over its headers: the blob's bytes are covered by their digest.
                digest=digest_of(instance.part10) if blob else None,
                size=instance.size,
            )
            # The blob reaches the disk while RabbitMQ confirms the message (both take milliseconds);
            # the C-STORE is answered only when both are done. After a power cut between the two, the
            # message may name a blob that is lost: the processor parks it, and the modality, never
            # answered, sends the instance again.
            confirm = self._publisher.submit(
                self._topology.ingest_exchange, self._topology.received_queue, body, envelope.to_headers()
            )
            sync_error: BlobStoreError | None = None
            if blob is not None:
                try:
                    blob.sync()
                except BlobStoreError as exc:
                    sync_error = exc
            confirm.wait()
            if sync_error is not None:
                raise sync_error  # the message is queued and names the blob as written: it stays
        except (BrokerUnavailable, BlobStoreError) as exc:
            # Only a message RabbitMQ refused (or never got) lets its blob go: one whose confirm was lost
            # may be in the queue all the same, and without its blob it would be parked as missing.
            if blob is not None and isinstance(exc, BrokerUnavailable) and not isinstance(exc, PublishOutcomeUnknown):
                blob.discard()
            RECEIVED.labels(instance.forward_node, "out-of-resources").inc()
            log.error(
                "c-store.refused",
                forward_node=instance.forward_node,
                sop_instance_uid=instance.sop_instance_uid,
                status="0xA700",
                reason=str(exc),
            )
            return STATUS_OUT_OF_RESOURCES
        RECEIVED.labels(instance.forward_node, "accepted").inc()
        RECEIVED_BYTES.labels(instance.forward_node).inc(instance.size)
        INTAKE_SECONDS.observe(time.perf_counter() - started)
        log.debug(
            "c-store.accepted",
            instance_id=envelope.instance_id,
            forward_node=instance.forward_node,
            sop_instance_uid=instance.sop_instance_uid,
            size=instance.size,
            blob=blob is not None,
        )
        return STATUS_SUCCESS
