"""What the runner provides to a service: a signing publisher, the blob store, the database, the topology.

`Providers` is built and started by the runner before any entrypoint, and stopped after them. `Work` is
what a handler gets with each message: the state (configuration) it is handled on, and a publisher
whose messages are all confirmed before the message is settled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import PendingConfirm
from karnak_shared.config import GatewayConfig
from karnak_shared.database import open_database
from karnak_shared.service.authentication import Signer
from karnak_shared.service.outcomes import Outcome, Park
from karnak_shared.service.redelivery import Publish, Redelivery
from karnak_shared.topology import Topology

S = TypeVar("S")


class Submitter(Protocol):
    """The publisher underneath (`karnak_shared.broker.Publisher`, or the testing kit's recorder)."""

    @property
    def connected(self) -> bool: ...

    def submit(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> PendingConfirm: ...


class SignedPublisher:
    """Signs every message with the gateway's key, then hands it to the confirming publisher."""

    def __init__(self, publisher: Submitter, signer: Signer) -> None:
        self.publisher = publisher
        self.signer = signer

    @property
    def connected(self) -> bool:
        return self.publisher.connected

    def submit(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
        sign: bool = True,
    ) -> PendingConfirm:
        """Hand a message over (signed unless `sign` is False) and return its pending confirm."""
        headers = self.signer.sign(headers or {}, body) if sign else dict(headers or {})
        return self.publisher.submit(exchange, routing_key, body, headers, mandatory=mandatory)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish a signed message and wait for its confirm (`BrokerUnavailable` otherwise)."""
        self.submit(exchange, routing_key, body, headers, mandatory=mandatory).wait()


class Providers:
    """The dependencies the runner owns for a service: publisher, blob store, database, signer."""

    def __init__(self, config: GatewayConfig, publisher: SignedPublisher, blobs: BlobStore) -> None:
        self.config = config
        self.publisher = publisher
        self.blobs = blobs
        self._database: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    @property
    def signer(self) -> Signer:
        return self.publisher.signer

    def database(self) -> sessionmaker[Session]:
        """The database's session factory, opened (schema brought up to date) on first use."""
        with self._lock:
            if self._database is None:
                self._database = open_database(self.config.database.url.get_secret_value())
            return self._database


@dataclass
class Sent:
    """A message published while handling a delivery, and the blob that only its message names."""

    confirm: PendingConfirm
    blob: str | None


class Deferred:
    """A delivery whose outcome comes later (the notifier's window): `settle` it from any thread."""

    def __init__(self, settle: Callable[[Outcome], None]) -> None:
        self._settle = settle
        self._done = threading.Event()

    def settle(self, outcome: Outcome) -> None:
        """Settle the delivery as `outcome` says (once; later calls are ignored)."""
        if not self._done.is_set():
            self._done.set()
            self._settle(outcome)


@dataclass
class Work(Generic[S]):
    """One delivery's handling: the state it is handled on, and what it published.

    Every `publish` is confirmed before the delivery is settled; if one is refused, the delivery is
    requeued instead, and the blobs that only refused messages named are deleted.
    """

    state: S
    topology: Topology
    blobs: BlobStore
    redelivery: Redelivery
    publisher: SignedPublisher
    sent: list[Sent] = field(default_factory=list)
    defer_to: Callable[[Work[S]], Deferred] | None = None
    deferred: Deferred | None = None

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
        blob: str | None = None,
    ) -> None:
        """Publish a signed message; `blob`: a blob made for this message alone (deleted if refused)."""
        self._send(Publish(exchange, routing_key, body, dict(headers or {}), mandatory), blob, sign=True)

    def event(self, exchange: str, routing_key: str, body: bytes) -> None:
        """Publish an event (no subscriber is not an error: not mandatory)."""
        self.publish(exchange, routing_key, body, mandatory=False)

    def retry_copy(self, headers: dict[str, Any], body: bytes, queue: str, attempt: int, blob: str | None) -> int:
        """Send a copy through the delay queues back to `queue`; the delay, or 0 when the tiers are used up."""
        delay = self.redelivery.policy.delay_for(attempt)
        if delay is None:
            return 0
        self._send(self.redelivery.retry(headers, body, queue, attempt, delay), blob, sign=False)
        return delay

    def park_copy(
        self, headers: dict[str, Any], body: bytes, exchange: str, routing_key: str, park: Park, blob: str | None
    ) -> None:
        """Park a copy the service made (signed: its headers are its own) for `karnak dead replay`."""
        self._send(self.redelivery.park(headers, body, exchange, routing_key, park, sign=True), blob, sign=False)

    def defer(self) -> Deferred:
        """Leave the delivery unsettled: the returned handle settles it later, from any thread."""
        assert self.defer_to is not None, "this entrypoint cannot defer its deliveries"
        self.deferred = self.defer_to(self)
        return self.deferred

    def _send(self, publish: Publish, blob: str | None, *, sign: bool) -> None:
        confirm = self.publisher.submit(
            publish.exchange, publish.routing_key, publish.body, publish.headers, mandatory=publish.mandatory, sign=sign
        )
        self.sent.append(Sent(confirm, blob))
