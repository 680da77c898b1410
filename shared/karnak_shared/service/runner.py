"""The service runner: one place for the wiring every service used to do its own way (DESIGN.md section 13).

It configures logging, starts the ops endpoint, the blob store and the signing publisher (providers
before entrypoints), builds the service's state from the configuration, consumes the queues its
`consume` entrypoints declare and runs its timers, and stops all of it in the reverse order on SIGTERM.
The at-least-once rules are written here, once:

- a delivery is acked only after every publish its handling caused is confirmed; if one is refused,
  it is requeued (and the blobs only refused messages named are deleted);
- the blob of an acked message is deleted only once the ack is sent (a retried or parked one keeps it);
- a handler that raises requeues its message and the worker goes on; one that keeps crashing on the
  same message parks it (`handler-crashed`, with the exception's type) before RabbitMQ's delivery limit.

And the poison-message rule: a message that fails authentication (`unauthenticated`) or cannot be read
(a bad envelope, a blob reference that is not the store's, a missing blob, not DICOM) is parked at once,
with its own cause, and never reaches the handler.

`apply_config(config, revision)` builds a new state with the service's `configure` (which raises to
refuse the configuration), declares the new topology, swaps state and topology at once and starts or
stops consumers for the queues that came or went (queues are never deleted). Work in progress finishes
on the state it started with; a state nothing uses any more is handed to the service's `release`.
"""

from __future__ import annotations

import queue
import re
import signal
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client import Counter

from karnak_shared import header_names
from karnak_shared.blobstore import open_blob_store
from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement, open_connection, wait_until_settleable
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import (
    BlobMissing,
    BlobStoreError,
    BrokerUnavailable,
    EnvelopeError,
    InvalidBlobReference,
    InvalidInstance,
    PublishOutcomeUnknown,
)
from karnak_shared.logs import EventLogger, configure_logging
from karnak_shared.ops import OpsServer, broker_state_recorder
from karnak_shared.service.authentication import Signer
from karnak_shared.service.batching import Batcher
from karnak_shared.service.entrypoints import ConsumeSpec, declared_consumers, declared_timers
from karnak_shared.service.messages import Reading, Received, Unreadable
from karnak_shared.service.outcomes import Ack, Outcome, Park, Requeue, Retry
from karnak_shared.service.providers import Deferred, Providers, Sent, SignedPublisher, Work
from karnak_shared.service.redelivery import Action, Redelivery, RetryPolicy
from karnak_shared.topology import Topology

log = EventLogger("karnak.runtime")
S = TypeVar("S")

PARKED = Counter("karnak_instances_parked_total", "Messages parked in the dead-letter queue", ["service", "cause"])

# How many acked messages' blobs a process remembers (a few MB) to recognise a redelivery whose ack was
# lost with its connection: far more than a prefetch window and the in-flight work of an outage.
_ACKED_BLOBS_KEPT = 100_000
# How often an idle batching worker looks again (it also wakes at once for a message or the stop mark).
_BATCH_IDLE_POLL_SECONDS = 5.0
_QUOTED = re.compile(r"""'[^']*'|"[^"]*"|b'[^']*'""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def masked(error: BaseException, limit: int = 200) -> str:
    """An exception's message safe to log and park: quoted values (where data would show) masked."""
    text = _CONTROL.sub("?", _QUOTED.sub("'…'", str(error)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Service(Generic[S]):
    """Base of every service: a name, a state built from the configuration, and entrypoints.

    `configure` builds everything the handlers need from a configuration (routes, compiled profiles,
    links...) and raises to refuse it; handlers get it as `work.state`. A service without consumers
    (the receiver) starts its own entrypoint in `start`.
    """

    name: ClassVar[str]
    # How long stopping waits for deliveries in flight to be settled (a service that holds deliveries
    # for minutes, the notifier, waits less: they come back to the queue).
    drain_seconds: ClassVar[float] = 30.0

    def configure(self, config: GatewayConfig, providers: Providers) -> S:
        raise NotImplementedError

    def topology(self, config: GatewayConfig) -> Topology:
        """The queues and exchanges this service declares for a configuration."""
        return Topology.from_config(config)

    def start(self, runner: ServiceRunner[S]) -> None:
        """Start entrypoints of the service's own (a DICOM listener); called after the consumers."""

    def stop(self) -> None:
        """Stop what `start` started; called first when the service stops."""

    def readiness(self) -> dict[str, Callable[[], bool]]:
        """Readiness checks beyond the broker's, by name."""
        return {}

    def idle(self, queue: str, state: S) -> None:
        """A `per_queue` consumer's queue had no message for its `idle_seconds` (or stopped being consumed)."""

    def release(self, state: S) -> None:
        """A state replaced by a newer one is no longer used by any work: close what it holds."""

    def connection_lost(self) -> None:
        """The consumer lost its connection: what it handed over and is not settled yet comes back.

        A service holding deliveries (the notifier's windows) drops them here: settling them is no
        longer possible, and their messages will be delivered again.
        """


class _Snapshot(Generic[S]):
    """A state with the topology and redelivery it goes with, counted while work uses it."""

    def __init__(self, state: S, topology: Topology, redelivery: Redelivery, revision: int) -> None:
        self.state = state
        self.topology = topology
        self.redelivery = redelivery
        self.revision = revision
        self._users = 0
        self._retired = False
        self._lock = threading.Lock()

    def acquire(self) -> _Snapshot[S]:
        with self._lock:
            self._users += 1
        return self

    def release(self) -> bool:
        """Drop one use; True when the snapshot is retired and nothing uses it any more."""
        with self._lock:
            self._users -= 1
            return self._retired and self._users == 0

    def retire(self) -> bool:
        with self._lock:
            self._retired = True
            return self._users == 0


@dataclass
class _Handling(Generic[S]):
    """One delivery on its way through the runner."""

    delivery: Delivery
    received: Received
    snapshot: _Snapshot[S]
    work: Work[S]
    message: Any = None
    outcome: Outcome | None = None
    action: Action | None = None
    # What carrying out the outcome published (a retry, a park): confirmed with the handler's own.
    own_sent: list[Sent] = field(default_factory=list)


@dataclass
class _QueueWorkers:
    """The threads of one queue of a `per_queue` (or batching) entrypoint."""

    inbox: queue.Queue[Delivery | None]
    threads: list[threading.Thread] = field(default_factory=list)


class _Consumption(Generic[S]):
    """The live side of one `consume` entrypoint: its workers and the settling of what they handled."""

    def __init__(self, runner: ServiceRunner[S], method: str, spec: ConsumeSpec) -> None:
        self.runner = runner
        self.method = method
        self.spec = spec
        self.queues: list[str] = []
        self._pool = (
            None
            if spec.per_queue or spec.batch
            else ThreadPoolExecutor(
                max_workers=_fixed(spec.workers), thread_name_prefix=f"{runner.service.name}-{method}"
            )
        )
        self._per_queue: dict[str, _QueueWorkers] = {}
        self._lock = threading.Lock()
        self._settling: queue.Queue[_Handling[S] | None] = queue.Queue()
        self._settler = threading.Thread(target=self._settle_loop, name=f"{method}-settler", daemon=True)

    def start(self) -> None:
        self._settler.start()

    def set_queues(self, queues: list[str]) -> None:
        with self._lock:
            self.queues = queues
            gone = [name for name in self._per_queue if name not in queues]
            for name in gone:
                workers = self._per_queue.pop(name)
                for _ in workers.threads:
                    workers.inbox.put(None)

    def dispatch(self, delivery: Delivery) -> None:
        """Hand a delivery to a worker (on the consumer's thread: never blocks)."""
        if self._pool is not None:
            self._pool.submit(self.runner._handle_one, self, delivery)
            return
        with self._lock:
            workers = self._per_queue.get(delivery.queue)
            if workers is None:
                workers = self._per_queue[delivery.queue] = self._start_workers(delivery.queue)
        workers.inbox.put(delivery)

    def _start_workers(self, name: str) -> _QueueWorkers:
        workers = _QueueWorkers(queue.Queue())
        count = self.spec.workers if isinstance(self.spec.workers, int) else self.spec.workers(self.runner.state)
        if self.spec.batch is not None:
            # One batcher for the queue's threads: one forms its batch while the others handle theirs.
            batching = self.spec.batch
            batcher: Batcher[Delivery, _Handling[S]] = Batcher(
                workers.inbox,
                lambda delivery: self.runner._prepare(self, delivery),
                lambda handling: batching.key(handling.message),
                lambda handling: batching.weight(handling.message),
                lambda: batching.limits(self.runner.state),
            )
            args: tuple[Any, ...] = (batcher,)
            target: Callable[..., None] = self._batch_loop
        else:
            args, target = (name, workers.inbox), self._queue_loop
        for n in range(max(1, count)):
            thread = threading.Thread(target=target, args=args, name=f"{name}-{n}", daemon=True)
            workers.threads.append(thread)
            thread.start()
        return workers

    def _queue_loop(self, name: str, inbox: queue.Queue[Delivery | None]) -> None:
        idle = self.spec.idle_seconds
        while True:
            try:
                delivery = inbox.get(timeout=idle)
            except queue.Empty:
                self.runner._idle(name)
                continue
            if delivery is None:
                break
            self.runner._handle_one(self, delivery)
        if idle is not None:
            self.runner._idle(name)

    def _batch_loop(self, batcher: Batcher[Delivery, _Handling[S]]) -> None:
        while (batch := batcher.next_batch(_BATCH_IDLE_POLL_SECONDS)) is not None:
            if batch:
                self.runner._handle_batch(self, batch)

    def settle_later(self, handling: _Handling[S]) -> None:
        if self._settler.is_alive():
            self._settling.put(handling)
        else:  # not started: the testing kit settles at once, in the caller's thread
            self.runner._settle(handling)

    def _settle_loop(self) -> None:
        while (handling := self._settling.get()) is not None:
            try:
                self.runner._settle(handling)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the settling of the others: the delivery comes back
                log.error("settlement.crashed", error_type=type(exc).__name__, error=masked(exc))

    def stop(self) -> None:
        """Let the workers finish what they hold, then settle the last deliveries."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._lock:
            groups = list(self._per_queue.values())
            self._per_queue.clear()
        for workers in groups:
            for _ in workers.threads:
                workers.inbox.put(None)
        for workers in groups:
            for thread in workers.threads:
                thread.join(timeout=60)
        self._settling.put(None)
        self._settler.join(timeout=60)


class ServiceRunner(Generic[S]):
    """Runs one service: providers, state, consumers, timers, ops endpoint, signals."""

    def __init__(
        self,
        service: Service[S],
        config: GatewayConfig,
        *,
        metrics_port: int | None = None,
        revision: int = 0,
        publisher: Any = None,
    ) -> None:
        self.service = service
        self.config = config
        self._metrics_port = metrics_port
        self._revision = revision
        self._given_publisher = publisher
        self.stopping = threading.Event()
        self._apply_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._consumptions = [_Consumption(self, name, spec) for name, spec in declared_consumers(service)]
        self._timers: list[threading.Thread] = []
        self._cleanup = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{service.name}-cleanup")
        # The blobs of the messages this process acked (and so deleted): an ack is not confirmed by
        # RabbitMQ, so one lost with its connection brings the message back with its blob gone. Found
        # here, that redelivery is acked as already done instead of parked `missing-blob`.
        self._acked_blobs: OrderedDict[str, None] = OrderedDict()
        self._acked_lock = threading.Lock()
        self.consumer: Consumer | None = None
        self.ops: OpsServer | None = None
        self.providers: Providers
        self._snapshot: _Snapshot[S]
        self._prepared = False
        # Why the last configuration was refused (for the status reports), None once one is applied.
        self.refusal: str | None = None
        self._stopped = False
        self._crash_limit = min(config.broker.crash_limit, max(1, config.broker.delivery_limit - 1))

    # --- life cycle -----------------------------------------------------------------------------

    @property
    def state(self) -> S:
        """The state the next piece of work starts on."""
        return self._snapshot.state

    @property
    def topology(self) -> Topology:
        return self._snapshot.topology

    @property
    def revision(self) -> int:
        return self._snapshot.revision

    @property
    def connected(self) -> bool:
        publisher = self.providers.publisher
        return publisher.connected and (self.consumer is None or self.consumer.connected)

    def prepare(self) -> ServiceRunner[S]:
        """Build the providers and the state (no thread, no connection yet); raises if the service cannot run.

        `start` calls it; the testing kit calls it alone to run handlers without a broker.
        """
        config, name = self.config, self.service.name
        blobs = open_blob_store(config.blob_store)
        blobs.ensure()
        key = config.secrets.key_bytes()
        if key is None:
            log.warning(
                "messages.unauthenticated",
                reason="secrets.key is not set: messages are neither signed nor checked (anyone with broker "
                "credentials can inject them)",
            )
        signer = Signer(key)
        topology = self.service.topology(config)
        publisher = self._given_publisher or Publisher(
            config.broker.url.get_secret_value(),
            topology,
            heartbeat=config.broker.heartbeat,
            confirm_timeout=config.broker.confirm_timeout,
            name=f"karnak-{name}-publisher",
            on_state=broker_state_recorder(name, "publisher"),
        )
        self.providers = Providers(config, SignedPublisher(publisher, signer), blobs)
        # The state first: a configuration this service cannot work with stops it before anything starts.
        state = self.service.configure(config, self.providers)
        self._snapshot = _Snapshot(state, topology, self._redelivery(topology, signer), self._revision)
        self._prepared = True
        return self

    def start(self) -> ServiceRunner[S]:
        """Start providers, build the state, then start the entrypoints; raises if the service cannot start."""
        config, name = self.config, self.service.name
        configure_logging(name, config.logging.level, config.logging.format)
        self.prepare()
        topology = self.topology
        publisher = self.providers.publisher.publisher
        port = self._metrics_port if self._metrics_port is not None else config.metrics.ports.get(name, 0)
        self.ops = OpsServer(name, config.metrics.host, port).start()
        if isinstance(publisher, Publisher) and self._given_publisher is None:
            publisher.start()
        if self._consumptions:
            queues = self._assign_queues(config, topology)
            for consumption in self._consumptions:
                consumption.start()
            self.consumer = Consumer(
                config.broker.url.get_secret_value(),
                topology,
                queues,
                self._dispatch,
                prefetch=self._prefetch(config),
                heartbeat=config.broker.heartbeat,
                name=f"karnak-{name}-consumer",
                on_state=self._consumer_state(broker_state_recorder(name, "consumer")),
            ).start()
        for method, spec in declared_timers(self.service):
            thread = threading.Thread(target=self._timer_loop, args=(method, spec.interval), daemon=True)
            thread.start()
            self._timers.append(thread)
        self.service.start(self)
        self.ops.add_check("broker", lambda: self.connected)
        for check, probe in self.service.readiness().items():
            self.ops.add_check(check, probe)
        log.info("service.started", service=name, revision=self._revision)
        return self

    def _consumer_state(self, record: Callable[[bool], None]) -> Callable[[bool], None]:
        def on_state(connected: bool) -> None:
            record(connected)
            if not connected:
                self.service.connection_lost()

        return on_state

    def run(self) -> None:
        """Start, then serve until SIGTERM/SIGINT; stop in the reverse order."""
        self.start()
        try:
            self.wait_for_signal()
        finally:
            self.stop()

    def wait_for_signal(self) -> None:
        """Block the main thread until SIGTERM or SIGINT (or `stopping` is set elsewhere)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self.stopping.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        while not self.stopping.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop entrypoints first (in-flight work finishes and is settled), then the providers (once)."""
        if self._stopped:
            return
        self._stopped = True
        log.info("service.stopping", service=self.service.name)
        self.stopping.set()
        self.service.stop()
        for thread in self._timers:
            thread.join(timeout=10)
        if self.consumer is not None:
            self.consumer.stop(drain_timeout=self.service.drain_seconds)
        for consumption in self._consumptions:
            consumption.stop()
        if self._prepared and self._snapshot.retire():
            self.service.release(self._snapshot.state)
        self._cleanup.shutdown(wait=True)
        publisher = self.providers.publisher.publisher
        if isinstance(publisher, Publisher) and self._given_publisher is None:
            publisher.stop()
        if self.ops is not None:
            self.ops.stop()

    # --- configuration --------------------------------------------------------------------------

    def apply_config(self, config: GatewayConfig, revision: int) -> bool:
        """Build everything for `config`, then swap it in at once; False (and nothing changed) if refused."""
        with self._apply_lock:
            try:
                state = self.service.configure(config, self.providers)
            except Exception as exc:  # noqa: BLE001 - the service refuses: it stays on the state it has
                self.refusal = masked(exc, 500)
                log.error("config.refused", revision=revision, error_type=type(exc).__name__, reason=self.refusal)
                return False
            topology = self.service.topology(config)
            try:
                declare(config.broker.url.get_secret_value(), topology)
            except BrokerUnavailable as exc:
                self.service.release(state)
                self.refusal = str(exc)
                log.error("config.refused", revision=revision, reason=self.refusal)
                return False
            fresh = _Snapshot(state, topology, self._redelivery(topology, self.providers.signer), revision)
            with self._snapshot_lock:
                old, self._snapshot = self._snapshot, fresh
            self.config = config
            publisher = self.providers.publisher.publisher
            if isinstance(publisher, Publisher):
                publisher.set_topology(topology)
            if self.consumer is not None:
                self.consumer.set_queues(self._assign_queues(config, topology), topology)
            if old.retire():
                self.service.release(old.state)
            self.refusal = None
            log.info("config.applied", revision=revision)
            return True

    def _redelivery(self, topology: Topology, signer: Signer) -> Redelivery:
        return Redelivery(topology, RetryPolicy(tuple(self.config.broker.retry_delays)), signer)

    def _assign_queues(self, config: GatewayConfig, topology: Topology) -> list[str]:
        every: list[str] = []
        for consumption in self._consumptions:
            queues = [q for q in consumption.spec.queues(config, topology) if q not in every]
            consumption.set_queues(queues)
            every.extend(queues)
        return every

    def _prefetch(self, config: GatewayConfig) -> int:
        wanted = [spec.prefetch(config) for spec in (c.spec for c in self._consumptions) if spec.prefetch]
        return max([config.broker.prefetch, *wanted])

    def _acquire(self) -> _Snapshot[S]:
        with self._snapshot_lock:  # never a snapshot retired and released between reading and counting it
            return self._snapshot.acquire()

    def _release(self, snapshot: _Snapshot[S]) -> None:
        if snapshot.release():
            self.service.release(snapshot.state)

    # --- deliveries -----------------------------------------------------------------------------

    def _dispatch(self, delivery: Delivery) -> None:
        for consumption in self._consumptions:
            if delivery.queue in consumption.queues:
                consumption.dispatch(delivery)
                return
        # A queue just removed by a new configuration: the message goes back to it and waits there.
        self.settle_delivery(delivery, Settlement.REQUEUE, None)

    def settle_delivery(self, delivery: Delivery, settlement: Settlement, then: Callable[[], None] | None) -> None:
        """Settle on the consumer (the testing kit records settlements instead)."""
        assert self.consumer is not None
        self.consumer.settle(delivery, settlement, then)

    def _prepare(self, consumption: _Consumption[S], delivery: Delivery) -> _Handling[S] | None:
        """Authenticate and read a delivery; None when it was settled already (parked, or stale)."""
        if self.consumer is not None and not wait_until_settleable(
            self.consumer, self.providers.publisher.publisher, delivery
        ):
            self.settle_delivery(delivery, Settlement.REQUEUE, None)  # already back in its queue
            return None
        snapshot = self._acquire()
        received = Received(delivery.queue, delivery.headers, delivery.body, delivery.exchange, delivery.routing_key)
        work = Work(
            snapshot.state,
            snapshot.topology,
            self.providers.blobs,
            snapshot.redelivery,
            self.providers.publisher,
        )
        handling = _Handling(delivery, received, snapshot, work)
        work.defer_to = lambda w: Deferred(lambda outcome: self._finish(consumption, handling, outcome))
        signer = self.providers.signer
        if not signer.check(delivery.headers, delivery.body):
            log.error("message.unauthenticated", queue=delivery.queue, exchange=delivery.exchange)
            self._finish(consumption, handling, Park("the message's signature is missing or wrong", "unauthenticated"))
            return None
        try:
            handling.message = consumption.spec.message.read(received, Reading(self.providers.blobs, signer.enabled))
        except Unreadable as exc:
            if exc.cause == "missing-blob" and self._acked_before(delivery, received):
                log.info(
                    "message.ack-lost",
                    queue=delivery.queue,
                    reason="acked before; its ack was lost with the connection",
                )
                self._finish(consumption, handling, Ack())
                return None
            self._finish(consumption, handling, Park(exc.reason, exc.cause))
            return None
        except (BlobStoreError, BrokerUnavailable) as exc:
            self._finish(consumption, handling, Requeue(str(exc)))
            return None
        return handling

    def _handle_one(self, consumption: _Consumption[S], delivery: Delivery) -> None:
        handling = self._prepare(consumption, delivery)
        if handling is None:
            return
        handler = getattr(self.service, consumption.method)
        outcome = self._call(lambda: handler(handling.message, handling.work), [handling])[0]
        if isinstance(outcome, Deferred):
            return
        self._finish(consumption, handling, outcome)

    def _handle_batch(self, consumption: _Consumption[S], batch: list[_Handling[S]]) -> None:
        # One Work for the batch: every publish of the batch is confirmed before any of it is settled.
        shared = batch[0].work
        for handling in batch[1:]:
            handling.work = shared
        handler = getattr(self.service, consumption.method)
        outcomes = self._call(lambda: handler([h.message for h in batch], shared), batch)
        if len(outcomes) != len(batch):  # a bug: the messages come back rather than be settled wrongly
            log.error("batch.outcomes-mismatch", messages=len(batch), outcomes=len(outcomes))
            outcomes = [Requeue("the handler gave no outcome for each message")] * len(batch)
        for handling, outcome in zip(batch, outcomes, strict=True):
            self._finish(consumption, handling, outcome)

    def _call(self, call: Callable[[], Any], batch: list[_Handling[S]]) -> list[Any]:
        """Run a handler; an exception becomes the outcome the poison-message rule gives it."""
        try:
            result = call()
            return list(result) if isinstance(result, list) else [result]
        except Unreadable as exc:
            outcome: Outcome = Park(exc.reason, exc.cause)
        except InvalidInstance as exc:
            outcome = Park(str(exc), "invalid-instance")
        except EnvelopeError as exc:
            outcome = Park(str(exc), "invalid-envelope")
        except InvalidBlobReference as exc:
            outcome = Park(str(exc), "invalid-blob-reference")
        except BlobMissing as exc:
            outcome = Park(str(exc), "missing-blob")
        except (BrokerUnavailable, BlobStoreError) as exc:
            # Down for now (the broker, the disk): the message comes back and is handled again.
            log.warning("message.requeued", reason=str(exc), queue=batch[0].delivery.queue)
            outcome = Requeue(str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker: requeue, and park if it keeps crashing
            return [self._crashed(exc, h.delivery) for h in batch]
        return [outcome for _ in batch]

    def _crashed(self, exc: Exception, delivery: Delivery) -> Outcome:
        crashes = delivery.delivery_count + 1
        error = masked(exc)
        log.error(
            "message.handler-crashed",
            queue=delivery.queue,
            error_type=type(exc).__name__,
            error=error,
            crashes=crashes,
            where=" < ".join(
                f"{frame.name}@{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"
                for frame in reversed(traceback.extract_tb(exc.__traceback__))
            ),
        )
        if crashes >= self._crash_limit:
            return Park(f"{type(exc).__name__}: {error} (crashed {crashes} times)", "handler-crashed")
        return Requeue(f"handler crashed: {type(exc).__name__}")

    def _finish(self, consumption: _Consumption[S], handling: _Handling[S], outcome: Outcome) -> None:
        """Publish what the outcome takes, and hand the delivery to the settler (which waits the confirms)."""
        handling.outcome = outcome
        action = handling.snapshot.redelivery.action(outcome, handling.received)
        handling.action = action
        try:
            for publish in action.publishes:
                confirm = self.providers.publisher.submit(
                    publish.exchange,
                    publish.routing_key,
                    publish.body,
                    publish.headers,
                    mandatory=publish.mandatory,
                    sign=False,
                )
                handling.own_sent.append(Sent(confirm, None))
        except BrokerUnavailable as exc:
            log.warning("message.requeued", reason=str(exc), queue=handling.delivery.queue)
            handling.action = Action((), Settlement.REQUEUE)
        consumption.settle_later(handling)

    def _settle(self, handling: _Handling[S]) -> None:
        action = handling.action
        assert action is not None
        settlement = action.settlement
        for sent in [*handling.work.sent, *handling.own_sent]:
            try:
                sent.confirm.wait()
            except BrokerUnavailable as exc:
                settlement = Settlement.REQUEUE
                log.warning("message.requeued", reason=str(exc), queue=handling.delivery.queue)
                # Only a message RabbitMQ refused lets its blob go: one whose confirm was lost may be queued.
                if sent.blob and not isinstance(exc, PublishOutcomeUnknown):
                    self._delete_blob(sent.blob)
        outcome = handling.outcome
        then: Callable[[], None] | None = None
        if settlement is Settlement.ACK and isinstance(outcome, Ack):
            blob = _blob_of(handling.received)
            if blob is not None:

                def then() -> None:
                    self._remember_acked(blob)
                    self._cleanup.submit(self._delete_blob, blob)

        self.settle_delivery(handling.delivery, settlement, then)
        self._count(handling, outcome, settlement, action)
        self._release(handling.snapshot)

    def _count(self, handling: _Handling[S], outcome: Outcome | None, settlement: Settlement, action: Action) -> None:
        """Count and log a park or a retry once it is confirmed (a requeued delivery is neither)."""
        if settlement is Settlement.REQUEUE:
            return
        if action.parked is not None:
            PARKED.labels(self.service.name, action.parked.cause).inc()
            log.error(
                "message.parked",
                cause=action.parked.cause,
                reason=action.parked.reason,
                queue=handling.delivery.queue,
                instance_id=_header(handling.received, "karnak-instance-id"),
            )
        elif isinstance(outcome, Retry):
            log.warning(
                "message.retry-scheduled",
                reason=outcome.reason,
                delay=action.retried_after,
                queue=handling.delivery.queue,
                instance_id=_header(handling.received, "karnak-instance-id"),
            )

    def _remember_acked(self, blob: str) -> None:
        with self._acked_lock:
            self._acked_blobs[blob] = None
            while len(self._acked_blobs) > _ACKED_BLOBS_KEPT:
                self._acked_blobs.popitem(last=False)

    def _acked_before(self, delivery: Delivery, received: Received) -> bool:
        """Whether a redelivered message's blob is gone because this process acked the message before."""
        blob = _blob_of(received)
        if blob is None or not (delivery.redelivered or delivery.delivery_count > 0):
            return False
        with self._acked_lock:
            return blob in self._acked_blobs

    def _delete_blob(self, reference: str) -> None:
        try:
            self.providers.blobs.delete(reference)
        except BlobStoreError as exc:
            log.warning("blob.delete-failed", blob=reference, reason=str(exc))

    def _idle(self, queue_name: str) -> None:
        snapshot = self._acquire()
        try:
            self.service.idle(queue_name, snapshot.state)
        except Exception as exc:  # noqa: BLE001 - an idle hook must not kill its worker
            log.error("service.idle-crashed", error_type=type(exc).__name__, error=masked(exc))
        finally:
            self._release(snapshot)

    def _timer_loop(self, method: str, interval: float) -> None:
        while not self.stopping.wait(interval):
            snapshot = self._acquire()
            try:
                getattr(self.service, method)(snapshot.state)
            except Exception as exc:  # noqa: BLE001 - a timer must not die with one failure
                log.error("timer.crashed", timer=method, error_type=type(exc).__name__, error=masked(exc))
            finally:
                self._release(snapshot)


def _fixed(workers: int | Callable[[Any], int]) -> int:
    if not isinstance(workers, int):
        raise TypeError("workers read from the state need per_queue or batch (a pool is sized before any state)")
    return workers


def _header(received: Received, name: str) -> str:
    value = received.headers.get(name, "")
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _blob_of(received: Received) -> str | None:
    """The blob an acked message named (the store refuses to delete an invalid reference)."""
    return _header(received, header_names.BLOB) or None


def declare(url: str, topology: Topology) -> None:
    """Declare a topology now, on a connection of its own (before a new configuration is used)."""
    connection = open_connection(url, name="karnak-declare")
    try:
        topology.declare(connection.channel())
    except Exception as exc:  # noqa: BLE001 - pika raises many kinds; the caller refuses the configuration
        raise BrokerUnavailable(f"cannot declare the topology: {exc!r}") from None
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            pass
