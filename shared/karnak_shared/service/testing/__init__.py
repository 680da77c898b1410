"""The testing kit of the service runtime: run a service's handler on a message without a broker.

    harness = Harness(ProcessorService(), config)
    handled = harness.deliver(instance_message(part10_bytes, forward_node="KARNAK-GW"))
    assert handled.settlement is Settlement.ACK and handled.published[0].routing_key == ...

The harness goes through the runner's own code (authentication, reading, the poison-message rule, the
handler, redelivery, the confirms, blob deletion after the ack), with a `RecordingPublisher` in place of
RabbitMQ. Tests and the benchmarks both use it and the message builders below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from karnak_shared import header_names
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Delivery, PendingConfirm, Settlement
from karnak_shared.config import GatewayConfig
from karnak_shared.envelope import Envelope
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.service.authentication import Signer, digest_of
from karnak_shared.service.runner import Service, ServiceRunner

S = TypeVar("S")

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"


@dataclass
class Published:
    """One message handed to the recording publisher."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool


@dataclass
class RecordingPublisher:
    """Stands in for `karnak_shared.broker.Publisher`: records every message, may refuse from one on.

    `fail_on_call`: the 1-based number of the publish from which on every confirm fails (as a nack).
    """

    fail_on_call: int | None = None
    calls: list[Published] = field(default_factory=list)
    attempts: int = 0
    connected: bool = True

    def submit(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> PendingConfirm:
        self.attempts += 1
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        if self.fail_on_call is not None and self.attempts >= self.fail_on_call:
            future.set_exception(BrokerUnavailable(f"RabbitMQ refused the message to {exchange}/{routing_key}"))
        else:
            self.calls.append(Published(exchange, routing_key, body, dict(headers or {}), mandatory))
            future.set_result(None)
        return PendingConfirm(future, f"{exchange}/{routing_key}", 1.0)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        self.submit(exchange, routing_key, body, headers, mandatory=mandatory).wait()

    def to(self, exchange: str) -> list[Published]:
        """The messages published to one exchange."""
        return [call for call in self.calls if call.exchange == exchange]


@dataclass(frozen=True)
class Message:
    """A message as it would arrive on a queue: headers and body."""

    headers: dict[str, Any]
    body: bytes = b""
    exchange: str = ""
    routing_key: str = ""


@dataclass
class Handled:
    """What became of one delivered message."""

    settlement: Settlement | None
    published: list[Published]
    deleted_blob: str | None = None

    @property
    def parked(self) -> list[Published]:
        return [p for p in self.published if header_names.CAUSE in p.headers]

    @property
    def cause(self) -> str | None:
        """The cause of the park of the delivered message itself (None if it was not parked)."""
        causes = [p.headers[header_names.CAUSE] for p in self.parked]
        return causes[-1] if causes else None


class Harness(Generic[S]):
    """A service prepared by the runner, without threads or a broker; `deliver` runs one message."""

    def __init__(self, service: Service[S], config: GatewayConfig, publisher: RecordingPublisher | None = None) -> None:
        self.publisher = publisher or RecordingPublisher()
        self.runner = ServiceRunner(service, config, publisher=self.publisher).prepare()
        self.settlements: list[tuple[Delivery, Settlement]] = []
        self._thens: list[Callable[[], None]] = []
        self.runner.settle_delivery = self._record  # type: ignore[method-assign]
        self._tag = 0

    @property
    def state(self) -> S:
        return self.runner.state

    @property
    def blobs(self) -> BlobStore:
        return self.runner.providers.blobs

    @property
    def signer(self) -> Signer:
        return self.runner.providers.signer

    def _record(self, delivery: Delivery, settlement: Settlement, then: Callable[[], None] | None) -> None:
        self.settlements.append((delivery, settlement))
        if then is not None:
            then()

    def deliver(
        self, message: Message, *, queue: str | None = None, entrypoint: str | None = None, delivery_count: int = 0
    ) -> Handled:
        """Run `message` through the runner as if taken from `queue` (default: the entrypoint's first)."""
        return self.deliver_batch([message], queue=queue, entrypoint=entrypoint, delivery_count=delivery_count)[0]

    def deliver_batch(
        self,
        messages: Sequence[Message],
        *,
        queue: str | None = None,
        entrypoint: str | None = None,
        delivery_count: int = 0,
    ) -> list[Handled]:
        """Run `messages` through the runner together, as one batch of a batching entrypoint would go.

        Each `Handled` has its own settlement; `published` is what the whole batch published.
        """
        consumptions = self.runner._consumptions
        consumption = next((c for c in consumptions if entrypoint in (None, c.method)), None)
        assert consumption is not None, f"{type(self.runner.service).__name__} has no entrypoint {entrypoint}"
        if not consumption.queues:
            self.runner._assign_queues(self.runner.config, self.runner.topology)
        queue = queue or (consumption.queues[0] if consumption.queues else "")
        deliveries = []
        for message in messages:
            headers = dict(message.headers)
            if delivery_count:
                headers[header_names.DELIVERY_COUNT] = delivery_count
            self._tag += 1
            deliveries.append(
                Delivery(
                    queue,
                    message.routing_key or queue,
                    self._tag,
                    delivery_count > 0,
                    headers,
                    message.body,
                    1,
                    message.exchange,
                )
            )
        before = len(self.publisher.calls)
        blob_before = set(_blob_files(self.blobs))
        settled = len(self.settlements)
        if consumption.spec.batch is not None:
            handlings = [h for d in deliveries if (h := self.runner._prepare(consumption, d)) is not None]
            if handlings:
                self.runner._handle_batch(consumption, handlings)
        else:
            for delivery in deliveries:
                self.runner._handle_one(consumption, delivery)
        self.runner._cleanup.shutdown(wait=True)  # the blob deletions that follow acks, done now
        self.runner._cleanup = ThreadPoolExecutor(max_workers=1)
        gone = set(blob_before - set(_blob_files(self.blobs)))
        by_tag = {d.delivery_tag: s for d, s in self.settlements[settled:]}
        published = self.publisher.calls[before:]
        handled = []
        for delivery in deliveries:
            blob = _header_text(delivery.headers.get(header_names.BLOB))
            # A message's own blob; with one message, any blob that went (one its refused publish named).
            deleted = blob if blob in gone else (sorted(gone)[0] if gone and len(deliveries) == 1 else None)
            handled.append(Handled(by_tag.get(delivery.delivery_tag), published, deleted))
        return handled


def _header_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _blob_files(blobs: BlobStore) -> list[str]:
    return [blob.reference for blob in blobs.blobs()]


# --- message builders --------------------------------------------------------------------------------


def instance_envelope(
    *,
    forward_node: str = "KARNAK-GW",
    sop_instance_uid: str = "1.2.826.0.1.3680043.9.7001.1.1",
    sop_class_uid: str = CT_IMAGE_STORAGE,
    transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN,
    **fields: Any,
) -> Envelope:
    """An envelope as the receiver makes it (fields may be overridden)."""
    values: dict[str, Any] = {
        "forward_node": forward_node,
        "calling_ae": "CT01",
        "sop_class_uid": sop_class_uid,
        "sop_instance_uid": sop_instance_uid,
        "transfer_syntax": transfer_syntax,
        "received_at": 1717171717.5,
    }
    values.update(fields)
    return Envelope(**values)


def instance_message(
    part10: bytes | Sequence[bytes],
    *,
    signer: Signer | None = None,
    blobs: BlobStore | None = None,
    envelope: Envelope | None = None,
    **fields: Any,
) -> Message:
    """A signed instance message as the receiver publishes it: inline, or as a blob when `blobs` is given."""
    parts = (part10,) if isinstance(part10, bytes) else tuple(part10)
    data = b"".join(parts)
    envelope = envelope or instance_envelope(size=len(data), **fields)
    body = data
    if blobs is not None:
        envelope = envelope.model_copy(update={"blob": blobs.put(parts), "digest": digest_of(parts)})
        body = b""
    return signed(Message(envelope.to_headers(), body), signer)


def signed(message: Message, signer: Signer | None) -> Message:
    """The message with its signature (unchanged without a signer or key)."""
    if signer is None:
        return message
    return Message(signer.sign(message.headers, message.body), message.body, message.exchange, message.routing_key)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, poll: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy and return it; raise `TimeoutError` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s")
        time.sleep(poll)
