"""The dicom-sender service: C-STORE each send message to its destination, then ack, retry or park it.

One worker per destination queue (`per_queue`): a destination's instances go one after another over its
link, an association kept open while the queue is busy and released when idle. The next instance goes
out while RabbitMQ confirms the last one's `transfer.sent` event: the runner acks each message only after
its event is confirmed (a second C-STORE of the same instance is harmless, a missing event is not).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from prometheus_client import Histogram

from karnak_dicom_sender.link import DestinationLink, Peer
from karnak_shared.config import DicomDestination, GatewayConfig
from karnak_shared.errors import BlobMissing, BlobStoreError, DeliveryError, TransientDeliveryError
from karnak_shared.logs import EventLogger
from karnak_shared.sender_metrics import LATENCY_BUCKETS, SENT, SENT_BYTES, TRANSIT_SECONDS
from karnak_shared.service import Ack, InstanceMessage, Outcome, Providers, Service, Work, consume
from karnak_shared.service.delivery import delivery_failed, transfer_event
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


def peers(config: GatewayConfig) -> list[Peer]:
    """The DICOM destinations of the configuration, with the calling AE title each one is sent from.

    Raises `ConfigError` naming the field when a destination's TLS files cannot be used.
    """
    out = []
    for n, node in enumerate(config.forward_nodes):
        for d, dest in enumerate(node.destinations):
            if not isinstance(dest, DicomDestination):
                continue
            where = f"forward_nodes[{n}].destinations[{d}].tls"
            out.append(
                Peer(
                    destination_id=dest.id,
                    host=dest.hostname,
                    port=dest.port,
                    called_ae=dest.ae_title,
                    calling_ae=dest.ae_title if dest.use_aetitle_destination else node.ae_title,
                    max_pdu=config.dicom_sender.max_pdu_bytes,
                    acse_timeout=config.dicom_sender.acse_timeout,
                    dimse_timeout=config.dicom_sender.dimse_timeout,
                    network_timeout=config.dicom_sender.network_timeout,
                    tls=dest.tls.client_context(where) if dest.tls is not None else None,
                )
            )
    return out


@dataclass(frozen=True)
class Links:
    """One link per dicom send queue, and how long a link stays open without traffic."""

    by_queue: dict[str, DestinationLink]
    idle_seconds: float


def dicom_queues(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.send_queue("dicom", dest.id) for _, dest in config.destinations() if dest.queue_kind == "dicom"]


# A temporary copy up to this size goes to memory-backed /dev/shm (an inline body, a small S3 blob).
SCRATCH_IN_MEMORY_BYTES = 16 * 1024 * 1024


class DicomSenderService(Service[Links]):
    """Delivers the messages of the dicom send queues through per-destination links."""

    name = "dicom-sender"

    def __init__(self) -> None:
        self._unreachable: dict[str, tuple[float, str]] = {}  # destination -> (no attempt until, why)

    def configure(self, config: GatewayConfig, providers: Providers) -> Links:
        # A destination's unusable TLS file refuses the configuration, naming the field.
        topology = self.topology(config)
        links = {topology.send_queue("dicom", peer.destination_id): DestinationLink(peer) for peer in peers(config)}
        if not links:
            log.warning("sender.idle", reason="the configuration has no dicom destination")
        return Links(links, config.dicom_sender.idle_release_seconds)

    def idle(self, queue: str, state: Links) -> None:
        link = state.by_queue.get(queue)
        if link is not None:
            link.release_if_idle(state.idle_seconds)

    def release(self, state: Links) -> None:
        for link in state.by_queue.values():
            link.release()

    @consume(dicom_queues, message=InstanceMessage, per_queue=True, idle_seconds=1.0)
    def send(self, message: InstanceMessage, work: Work[Links]) -> Outcome:
        """C-STORE one instance over its destination's link."""
        envelope = message.envelope
        link = work.state.by_queue[message.queue]
        destination = link.peer.destination_id
        started = time.perf_counter()
        held = self._held(destination)
        try:
            if held is not None:
                raise TransientDeliveryError(held)  # before fetching the blob (a download from S3)
            with _payload_file(message) as path:
                stored = link.store(path, envelope.sop_class_uid, envelope.sop_instance_uid, envelope.transfer_syntax)
        except DeliveryError as exc:
            if exc.transient and held is None and not link.is_open:
                self._unreachable[destination] = (time.monotonic() + UNREACHABLE_HOLD_SECONDS, exc.reason)
            return delivery_failed(work, message, exc)
        DELIVERY_SECONDS.labels(destination).observe(time.perf_counter() - started)
        TRANSIT_SECONDS.labels(destination).observe(max(0.0, time.time() - envelope.received_at))
        SENT.labels(destination, "sent").inc()
        SENT_BYTES.labels(destination).inc(envelope.size)
        # A warning status (0xB0xx) is stored: `sent`, with the warning as its reason for the monitor.
        transfer_event(work, message, "sent", stored.warning)
        log.debug("instance.sent", **envelope.log_fields())
        return Ack()

    def _held(self, destination: str) -> str | None:
        """Why no attempt is made now for a destination found unreachable a moment ago, else None."""
        until, reason = self._unreachable.get(destination, (0.0, ""))
        if time.monotonic() >= until:
            return None
        return f"{reason} (no new attempt for {UNREACHABLE_HOLD_SECONDS:g} s)"


@contextmanager
def _payload_file(message: InstanceMessage) -> Iterator[Path]:
    """A file holding the instance: its blob's file, or a temporary copy (of an inline body, or streamed from
    an object store's blob: on disk when it is large, never whole in memory)."""
    source = message.source()
    if isinstance(source, Path):
        yield source
        return
    if isinstance(source, bytes):
        name = _scratch_copy(len(source), lambda handle: handle.write(source))
    else:
        with source.open() as stream:
            size = stream.seek(0, os.SEEK_END)
            stream.seek(0)
            name = _scratch_copy(size, lambda handle: _copy(stream, handle))
    try:
        yield Path(name)
    finally:
        os.unlink(name)


def _scratch_copy(size: int, write: Callable[[BinaryIO], object]) -> str:
    """A temporary file `write` fills: in /dev/shm up to `SCRATCH_IN_MEMORY_BYTES`, else on disk."""
    shm = size <= SCRATCH_IN_MEMORY_BYTES and os.access("/dev/shm", os.W_OK)
    fd, name = tempfile.mkstemp(prefix="karnak-", suffix=".dcm", dir="/dev/shm" if shm else None)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
    except BaseException:
        os.unlink(name)
        raise
    return name


def _copy(stream: BinaryIO, handle: BinaryIO) -> None:
    """Copy an object store's blob by chunks; its read errors said as the blob store says them."""
    try:
        while chunk := stream.read(1024 * 1024):
            handle.write(chunk)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise BlobMissing(str(exc.strerror)) from None
        raise BlobStoreError(f"cannot copy the instance's blob to a temporary file: {exc.strerror}") from None
