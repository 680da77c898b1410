"""The processor service: route each `received` instance to every destination of its forward node.

For each destination: skip it if disabled, reject it (a `transfer.rejected` event) when its condition or
authorized SOP classes say no, make its copy (de-identification, tag morphing, transcoding) and queue it.
A copy that cannot be made is parked for that destination alone; one that must wait (the pseudonym API
down) goes through the delay queues for that destination alone. The runner acks the received message
only once every one of these messages is confirmed, then deletes its blob (each copy has its own link).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prometheus_client import Counter, Histogram

from karnak_dicom.instance import Instance, Source, read_instance
from karnak_processor.routing import Deliver, Fail, Later, Reject, Router, Skip
from karnak_shared.config import GatewayConfig
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.errors import BlobMissing, BlobStoreError
from karnak_shared.logs import EventLogger
from karnak_shared.payload import store_payload
from karnak_shared.service import Ack, InstanceMessage, Outcome, Park, Providers, Service, Work, consume
from karnak_shared.service.authentication import digest_of
from karnak_shared.service.runner import PARKED
from karnak_shared.topology import Topology

log = EventLogger("karnak.processor")
WORKERS = 4

ROUTED = Counter(
    "karnak_instances_routed_total",
    "Routing decisions per destination: queued, rejected or disabled",
    ["forward_node", "destination", "outcome"],
)
PROCESSING_SECONDS = Histogram(
    "karnak_processing_seconds",
    "Time to route one received instance to all its destinations",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True)
class Routes:
    """What the processor works with for one configuration: the router and the inline size limit."""

    router: Router
    max_inline: int


def received_queue(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.received_queue]


class ProcessorService(Service[Routes]):
    """Routes received instances; every output is confirmed before the input is acked."""

    name = "processor"

    def configure(self, config: GatewayConfig, providers: Providers) -> Routes:
        # Loads every profile and opens every pseudonym source: a destination that cannot work refuses the
        # configuration with its field named (at start-up: before anything is consumed).
        uses_cache = any(
            d.deidentification and d.deidentification.pseudonym.type == "cache" for _, d in config.destinations()
        )
        session_factory = providers.database() if uses_cache else None
        router = Router(config, base_dir=config.base_dir, session_factory=session_factory)
        return Routes(router, config.blob_store.max_inline_bytes)

    @consume(received_queue, message=InstanceMessage, workers=WORKERS)
    def route(self, message: InstanceMessage, work: Work[Routes]) -> Outcome:
        """Route one received instance to every destination of its forward node."""
        started = time.perf_counter()
        envelope = message.envelope
        # An instance that is not DICOM raises InvalidInstance, parked at once by the runner.
        instance = _read_received(message.source())
        router = work.state.router
        if not router.knows(envelope.forward_node):
            return Park(f"forward node {envelope.forward_node} is not configured", "unknown-forward-node")
        # A message parked or retried for one destination names it: only that destination is redone.
        for decision in router.decide(envelope.forward_node, instance, only=envelope.destination):
            if isinstance(decision, Deliver):
                self._queue(work, message, decision)
                outcome = "queued"
            elif isinstance(decision, Reject):
                self._reject(work, envelope, instance, decision)
                outcome = "rejected"
            elif isinstance(decision, Fail):
                self._fail(work, message, instance, decision)
                outcome = "failed"
            elif isinstance(decision, Later):
                self._retry_later(work, message, decision)
                outcome = "retried"
            else:
                assert isinstance(decision, Skip)
                outcome = "disabled"
            ROUTED.labels(envelope.forward_node, decision.destination.id, outcome).inc()
        PROCESSING_SECONDS.observe(time.perf_counter() - started)
        return Ack()

    def _queue(self, work: Work[Routes], message: InstanceMessage, decision: Deliver) -> None:
        envelope = message.envelope
        destination = decision.destination
        blob: str | None
        digest: str | None = None
        if decision.unchanged and envelope.blob:
            body, blob, digest = b"", work.blobs.link(envelope.blob), envelope.digest
        else:
            body, blob = store_payload(decision.part10, work.blobs, work.state.max_inline)
            if blob is not None:
                digest = digest_of(decision.part10)
        outgoing = envelope.model_copy(
            update={
                "destination": destination.id,
                "blob": blob,
                "digest": digest,
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
        queue = work.topology.send_queue(destination.queue_kind, destination.id)
        work.publish(work.topology.send_exchange, queue, body, outgoing.to_headers(), blob=blob)
        if decision.syntax_fallback:
            log.info("instance.syntax-fallback", reason=decision.syntax_fallback, **outgoing.log_fields())
        log.debug("instance.queued", **outgoing.log_fields())

    def _reported(self, work: Work[Routes], envelope: Envelope, instance: Instance, destination_id: str) -> Envelope:
        """The envelope an event about this destination carries (identifiers safe for that destination)."""
        route = work.state.router.route(envelope.forward_node, destination_id)
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

    def _event(
        self,
        work: Work[Routes],
        envelope: Envelope,
        kind: Literal["failed", "rejected"],
        destination_id: str,
        reason: str,
    ) -> None:
        event = TransferEvent.for_envelope(envelope, kind, destination_id, reason)
        work.event(work.topology.events_exchange, event.routing_key, event.to_body())

    def _reject(self, work: Work[Routes], envelope: Envelope, instance: Instance, decision: Reject) -> None:
        destination_id = decision.destination.id
        reported = self._reported(work, envelope, instance, destination_id)
        self._event(work, reported, "rejected", destination_id, decision.reason)
        log.info(
            "instance.rejected", reason=decision.reason, **{**envelope.log_fields(), "destination": destination_id}
        )

    def _own_copy(
        self, work: Work[Routes], message: InstanceMessage, destination_id: str, attempt: int = 0
    ) -> tuple[dict[str, Any], bytes, str | None]:
        """Headers, body and blob link of a copy of the received message for one destination."""
        envelope = message.envelope
        blob = work.blobs.link(envelope.blob) if envelope.blob else None
        copy = envelope.model_copy(update={"destination": destination_id, "blob": blob, "attempt": attempt})
        return copy.to_headers(), message.body, blob

    def _park_copy(self, work: Work[Routes], message: InstanceMessage, destination_id: str, park: Park) -> None:
        headers, body, blob = self._own_copy(work, message, destination_id, message.envelope.attempt)
        topology = work.topology
        work.park_copy(headers, body, topology.ingest_exchange, topology.received_queue, park, blob)
        PARKED.labels("processor", park.cause).inc()
        log.error(
            "instance.parked",
            cause=park.cause,
            reason=park.reason,
            **{**message.envelope.log_fields(), "destination": destination_id},
        )

    def _fail(self, work: Work[Routes], message: InstanceMessage, instance: Instance, decision: Fail) -> None:
        """Park the received instance for this destination alone; `karnak dead replay` redoes only it."""
        destination_id = decision.destination.id
        self._park_copy(work, message, destination_id, Park(decision.reason, "transformation-failed"))
        reported = self._reported(work, message.envelope, instance, destination_id)
        self._event(work, reported, "failed", destination_id, decision.reason)

    def _retry_later(self, work: Work[Routes], message: InstanceMessage, decision: Later) -> None:
        """Send the instance through the delay queues for the one destination whose copy must wait."""
        envelope = message.envelope
        destination_id = decision.destination.id
        # Only a copy already retried for this destination counts its attempts.
        attempt = envelope.attempt if envelope.destination == destination_id else 0
        if work.redelivery.policy.delay_for(attempt) is None:
            reason = f"gave up after {attempt + 1} attempts: {decision.reason}"
            self._park_copy(work, message, destination_id, Park(reason, "retries-exhausted"))
            return
        headers, body, blob = self._own_copy(work, message, destination_id, attempt)
        delay = work.retry_copy(headers, body, work.topology.received_queue, attempt, blob)
        log.warning(
            "instance.retry-scheduled",
            reason=decision.reason,
            delay=delay,
            **{**envelope.log_fields(), "destination": destination_id},
        )


def _read_received(source: Source) -> Instance:
    """`read_instance`, with an unreadable blob said as the blob store says it (`BlobMissing` when gone)."""
    try:
        return read_instance(source)
    except OSError as exc:
        if isinstance(source, bytes):
            raise
        if isinstance(source, Path):
            reference = f"{source.parent.name}/{source.name}"  # as the blob store names it
            if isinstance(exc, FileNotFoundError):
                raise BlobMissing(f"blob {reference} is missing from {source.parent.parent}") from None
            raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None
        # An object store's stream: its errors name the blob already.
        if isinstance(exc, FileNotFoundError):
            raise BlobMissing(str(exc.strerror)) from None
        raise BlobStoreError(f"cannot read the instance's blob: {exc.strerror}") from None
