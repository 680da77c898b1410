"""The stow-sender on the service runtime: batches of one study, one STOW-RS request, each instance settled.

The runtime forms the batches (up to `batch_size` instances of one study, `max_wait` s, `max_batch_bytes`)
with `concurrency` threads per destination queue, each posting on a client of its own while the next
batch forms. An instance the server stored is acked (and its blob deleted) after its `transfer.sent`
event and, for a destination with Kheops albums, the `kheops.share` messages of its series are confirmed.
One the server had already (0x0111, a 409) is a `duplicate`: acked, neither sent nor failed. One that
failed transiently goes to the delay queues with its own attempt count and a `transfer.retried` event;
one refused for good, or out of attempts, is parked with the reason and a `transfer.failed` event.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter, Histogram

from karnak_shared.config import GatewayConfig, StowDestination
from karnak_shared.envelope import SHARE_ROUTING_KEY, ShareRequest
from karnak_shared.errors import (
    BlobMissing,
    BlobStoreError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from karnak_shared.headers import parse_headers
from karnak_shared.logs import EventLogger
from karnak_shared.sender_metrics import LATENCY_BUCKETS, SENT, SENT_BYTES, TRANSIT_SECONDS
from karnak_shared.service import (
    Ack,
    Batching,
    BatchLimits,
    InstanceMessage,
    Outcome,
    Park,
    Providers,
    Requeue,
    Service,
    Work,
    consume,
)
from karnak_shared.service.delivery import delivery_failed, transfer_event
from karnak_shared.topology import Topology
from karnak_stow_sender.client import StowClient
from karnak_stow_sender.response import InstanceResult, StowResponse, settle
from karnak_stow_sender.response import Outcome as StowOutcome
from karnak_stow_sender.settings import StowSenderSettings, load_settings

log = EventLogger("karnak.stow-sender")
SERVICE = "stow-sender"

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

    def close(self) -> None: ...


TransportFactory = Callable[[StowDestination, StowSenderSettings], StowTransport]


def http_client(destination: StowDestination, settings: StowSenderSettings) -> StowTransport:
    return StowClient(destination.id, destination.url, parse_headers(destination.headers), settings)


class Clients:
    """A destination's clients, one per request in flight: a worker borrows one for a batch."""

    def __init__(self, clients: list[StowTransport]) -> None:
        self.destination_id = clients[0].destination_id
        self._all = clients
        self._free: queue.Queue[StowTransport] = queue.Queue()
        for client in clients:
            self._free.put(client)

    @contextmanager
    def borrow(self) -> Iterator[StowTransport]:
        client = self._free.get()
        try:
            yield client
        finally:
            self._free.put(client)

    def close(self) -> None:
        for client in self._all:
            client.close()


@dataclass(frozen=True)
class Destinations:
    """What the sender works with for one configuration: the clients of each stow send queue."""

    by_queue: dict[str, Clients]
    settings: StowSenderSettings

    @property
    def limits(self) -> BatchLimits:
        s = self.settings
        return BatchLimits(s.batch_size, s.max_wait, s.max_batch_bytes)


def stow_destinations(config: GatewayConfig) -> list[StowDestination]:
    """The STOW-RS destinations of the configuration."""
    return [dest for _, dest in config.destinations() if isinstance(dest, StowDestination)]


def stow_queues(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.send_queue("stow", dest.id) for dest in stow_destinations(config)]


def _study(message: InstanceMessage) -> str | None:
    return message.envelope.study_instance_uid


def _size(message: InstanceMessage) -> int:
    return message.envelope.size or len(message.body)


def _prefetch(config: GatewayConfig) -> int:
    # A batch can only fill from what the broker has handed over: one batch per request in flight, and
    # one more forming behind them.
    settings = load_settings(config)
    return (settings.concurrency + 1) * settings.batch_size


@dataclass
class _Instance:
    position: int
    message: InstanceMessage
    part10: bytes

    @property
    def uid(self) -> str:
        return self.message.envelope.sop_instance_uid


class StowSenderService(Service[Destinations]):
    """Delivers the messages of the stow send queues in batches, one STOW-RS request each."""

    name = SERVICE

    def __init__(self, settings: StowSenderSettings | None = None, transport: TransportFactory = http_client) -> None:
        self._settings = settings
        self._transport = transport

    def topology(self, config: GatewayConfig) -> Topology:
        # This sender feeds the sharer's queue, so it declares it when any destination shares into albums.
        albums = any(dest.kheops_albums for dest in stow_destinations(config))
        return dataclasses.replace(Topology.from_config(config), kheops=albums)

    def configure(self, config: GatewayConfig, providers: Providers) -> Destinations:
        settings = self._settings or load_settings(config)
        destinations = stow_destinations(config)
        if not settings.verify_tls and destinations:
            log.warning("tls.verification-off", reason="stow_sender.verify_tls is false: certificates are not checked")
        if not destinations:
            log.info("sender.idle", reason="the configuration has no stow destination")
        topology = self.topology(config)
        return Destinations(
            {
                topology.send_queue("stow", dest.id): Clients(
                    [self._transport(dest, settings) for _ in range(settings.concurrency)]
                )
                for dest in destinations
            },
            settings,
        )

    def release(self, state: Destinations) -> None:
        for clients in state.by_queue.values():
            clients.close()

    @consume(
        stow_queues,
        message=InstanceMessage,
        batch=Batching(limits=lambda state: state.limits, key=_study, weight=_size),
        workers=lambda state: state.settings.concurrency,
        prefetch=_prefetch,
    )
    def send(self, messages: list[InstanceMessage], work: Work[Destinations]) -> list[Outcome]:
        """Send a batch (one study, one destination) in one request; one outcome per message, in order."""
        clients = work.state.by_queue.get(messages[0].queue)
        if clients is None:
            # Its destination was removed since: back to its queue, which is no longer consumed, to wait.
            return [Requeue("the destination is no longer configured") for _ in messages]
        outcomes: dict[int, Outcome] = {}
        instances: list[_Instance] = []
        for position, message in enumerate(messages):
            try:
                instances.append(_Instance(position, message, message.read_bytes()))
            except BlobMissing as exc:
                outcomes[position] = Park(str(exc), "missing-blob")
            except BlobStoreError as exc:
                outcomes[position] = Requeue(str(exc))
        if instances:
            with clients.borrow() as client:
                results = self._deliver(instances, client)
            outcomes.update(self._settle(instances, results, client, work))
        return [outcomes[position] for position in range(len(messages))]

    # --- the request -------------------------------------------------------------------------------

    def _deliver(self, instances: list[_Instance], client: StowTransport) -> dict[str, InstanceResult]:
        # A duplicate delivery of an instance already in the batch is sent once and settled like it.
        parts: dict[str, bytes] = {}
        for instance in instances:
            parts.setdefault(instance.uid, instance.part10)
        status, results = self._post(parts, client)
        if status == 413 and len(parts) > 1:
            # Too large for the server or a proxy in front of it (e.g. nginx's client_max_body_size): one
            # instance per request instead.
            log.warning("stow.batch-too-large", destination=client.destination_id, instances=len(parts))
            results = {}
            for uid, part in parts.items():
                results.update(self._post({uid: part}, client)[1])
        return results

    def _post(self, parts: dict[str, bytes], client: StowTransport) -> tuple[int | None, dict[str, InstanceResult]]:
        destination = client.destination_id
        BATCH_INSTANCES.labels(destination).observe(len(parts))
        started = time.perf_counter()
        try:
            response = client.post(list(parts.values()))
        except TransientDeliveryError as exc:
            REQUESTS.labels(destination, "error").inc()
            return None, dict.fromkeys(parts, InstanceResult(StowOutcome.TRANSIENT, exc.reason))
        DELIVERY_SECONDS.labels(destination).observe(time.perf_counter() - started)
        REQUESTS.labels(destination, str(response.status)).inc()
        return response.status, settle(response, parts, client.where)

    # --- settling ----------------------------------------------------------------------------------

    def _settle(
        self,
        instances: list[_Instance],
        results: dict[str, InstanceResult],
        client: StowTransport,
        work: Work[Destinations],
    ) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        on_server: dict[tuple[str, str], list[tuple[_Instance, InstanceResult]]] = {}
        for instance in instances:
            result = results[instance.uid]
            if result.outcome in (StowOutcome.STORED, StowOutcome.DUPLICATE):
                envelope = instance.message.envelope
                key = (envelope.study_instance_uid or "", envelope.series_instance_uid or "")
                on_server.setdefault(key, []).append((instance, result))
            elif result.outcome is StowOutcome.TRANSIENT:
                error = TransientDeliveryError(result.reason or "transient failure")
                outcomes[instance.position] = delivery_failed(work, instance.message, error)
            else:
                refused = PermanentDeliveryError(result.reason or "refused by the destination")
                outcomes[instance.position] = delivery_failed(work, instance.message, refused)
        for (study, series), group in on_server.items():
            # The share requests go out first: the runner acks nothing before every publish is confirmed.
            self._request_shares(study, series, [instance for instance, _ in group], client.destination_id, work)
            for instance, result in group:
                outcomes[instance.position] = self._on_server(instance, result, client.destination_id, work)
        return outcomes

    def _request_shares(
        self, study: str, series: str, instances: list[_Instance], destination: str, work: Work[Destinations]
    ) -> None:
        albums: set[int] = set()
        forward_node = ""
        for instance in instances:
            albums.update(instance.message.envelope.kheops_albums)
            forward_node = instance.message.envelope.forward_node
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
            work.publish(work.topology.events_exchange, SHARE_ROUTING_KEY, request.to_body(), request.to_headers())
            SHARES_REQUESTED.labels(destination).inc()

    def _on_server(
        self, instance: _Instance, result: InstanceResult, destination: str, work: Work[Destinations]
    ) -> Outcome:
        message = instance.message
        envelope = message.envelope
        if result.outcome is StowOutcome.DUPLICATE:
            transfer_event(work, message, "duplicate", result.reason)
            SENT.labels(destination, "duplicate").inc()
            log.info("instance.duplicate", reason=result.reason or "-", **envelope.log_fields())
            return Ack()
        transfer_event(work, message, "sent", result.reason)
        SENT.labels(destination, "sent").inc()
        SENT_BYTES.labels(destination).inc(len(instance.part10))
        TRANSIT_SECONDS.labels(destination).observe(max(0.0, time.time() - envelope.received_at))
        if result.reason:
            log.info("instance.sent-with-warning", reason=result.reason, **envelope.log_fields())
        else:
            log.debug("instance.sent", **envelope.log_fields())
        return Ack()
