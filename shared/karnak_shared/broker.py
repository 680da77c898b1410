"""A robust RabbitMQ client on pika for the gateway's services (DESIGN.md section 4b).

pika's BlockingConnection is not thread-safe and does not reconnect by itself, so each connection here
lives in one thread of its own:

- `Publisher` owns a connection in a background thread; any thread calls `publish`, which returns only
  once the broker has confirmed the message and raises `BrokerUnavailable` otherwise (nack, unroutable,
  connection lost, timeout). Nothing is ever reported published that the broker did not take.
- `Consumer` owns another connection, hands each delivery to the service's `dispatch` callable (which
  does the slow work in a worker thread) and settles it later through `add_callback_threadsafe`, so slow
  work never starves the heartbeats. After a connection loss it reconnects with back-off and redeclares
  the topology; deliveries that were not settled are redelivered by the broker, and settlements of
  deliveries from a previous connection are dropped (the handlers are idempotent).
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from karnak_shared.errors import BrokerUnavailable, BrokerUnreachable, PublishOutcomeUnknown
from karnak_shared.logs import EventLogger, redact_url
from karnak_shared.topology import Topology

log = EventLogger("karnak.broker")
# pika logs each failed connection attempt seven times over (socket, connector, workflow, traceback) and an
# expected 404 of a passive declare as a warning; every failure it reports also reaches this module as an
# exception, which is logged once with the URL (see `Reachability`), or is expected.
logging.getLogger("pika").setLevel(logging.CRITICAL)

_CONNECTION_ERRORS = (
    pika.exceptions.AMQPError,
    OSError,
)


def connection_parameters(url: str, heartbeat: int = 30, name: str = "karnak") -> pika.URLParameters:
    """Parameters for a connection: heartbeats, a blocked-connection timeout and a client name."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    return params


BROKER_HINT = (
    "start RabbitMQ (`rabbitmq-server -detached`, `docker run -d -p 5672:5672 rabbitmq:3.13` or "
    "`docker compose up -d rabbitmq`) or point broker.url at one; retrying every few seconds"
)


def connect_failure_reason(exc: BaseException) -> str:
    """The root of pika's nested connection errors, e.g. ``ConnectionRefusedError(111, 'Connection refused')``."""
    while True:
        inner = getattr(exc, "exception", None)  # pika's AMQPConnector*Error wraps the socket's error
        if isinstance(inner, BaseException):
            exc = inner
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            return f"{type(exc).__name__}: {', '.join(map(str, exc.args))}" if exc.args else type(exc).__name__


class Reachability:
    """Says once per outage that RabbitMQ cannot be reached (URL, password masked, how to start one).

    Every connection of a service (publisher, consumers, listeners) retries on its own; told here, the
    service logs one clear line instead of one per attempt and role, and one more when it is back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down = False

    def failed(self, url: str, reason: str) -> None:
        with self._lock:
            first, self._down = not self._down, True
        if first:
            log.error("broker.unreachable", url=redact_url(url), reason=reason, hint=BROKER_HINT)
        else:
            log.debug("broker.still-unreachable", url=redact_url(url), reason=reason)

    def reached(self, url: str) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            log.info("broker.reachable", url=redact_url(url))


REACHABILITY = Reachability()


def open_connection(url: str, heartbeat: int = 30, name: str = "karnak") -> BlockingConnection:
    """Open a blocking connection, raising `BrokerUnreachable` (without the password) when it fails."""
    try:
        connection = BlockingConnection(connection_parameters(url, heartbeat, name))
    except _CONNECTION_ERRORS as exc:
        reason = connect_failure_reason(exc)
        REACHABILITY.failed(url, reason)
        raise BrokerUnreachable(f"cannot connect to RabbitMQ at {redact_url(url)}: {reason}") from None
    REACHABILITY.reached(url)
    return connection


class ConfirmingPublisher(Protocol):
    """What handlers need of a publisher: publish and return only once the broker confirmed."""

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None: ...


class PendingConfirm:
    """A message handed to the publisher whose confirm has not been waited for yet (see `Publisher.submit`)."""

    def __init__(self, future: Future[None], description: str, timeout: float) -> None:
        self._future = future
        self._description = description
        self._timeout = timeout

    def wait(self) -> None:
        """Return once RabbitMQ confirmed the message; raise `BrokerUnavailable` (or its subclasses) otherwise."""
        try:
            self._future.result(timeout=self._timeout)
        except TimeoutError:
            if self._future.cancel():  # still waiting for the publisher thread: never published
                raise BrokerUnavailable(
                    f"RabbitMQ could not take the message to {self._description} within {self._timeout:g} s"
                ) from None
            raise PublishOutcomeUnknown(
                f"no confirm from RabbitMQ within {self._timeout:g} s for {self._description}"
            ) from None


@dataclass
class _PublishRequest:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool
    future: Future[None] = field(default_factory=Future)


class SubmittingPublisher(ConfirmingPublisher, Protocol):
    """A publisher that can also hand a message over without waiting for its confirm."""

    def submit(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> PendingConfirm: ...


class Publisher:
    """Publishes with confirms from any thread through one connection owned by a background thread."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        heartbeat: int = 30,
        confirm_timeout: float = 30.0,
        name: str = "karnak-publisher",
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._url = url
        self._topology = topology
        self._heartbeat = heartbeat
        self._confirm_timeout = confirm_timeout
        self._name = name
        self._on_state = on_state
        self._requests: queue.Queue[_PublishRequest | None] = queue.Queue()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._next_attempt = 0.0
        self._backoff = 0.5

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def set_topology(self, topology: Topology) -> None:
        """Declare `topology` on the next connection (a new configuration's queues)."""
        self._topology = topology

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)
        self._thread.join(timeout=10)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish persistently and wait for the broker's confirm; raise `BrokerUnavailable` otherwise."""
        self.submit(exchange, routing_key, body, headers, mandatory=mandatory).wait()

    def submit(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> PendingConfirm:
        """Hand a message to the publisher and return at once: the caller does other work, then `wait()`s.

        The receiver fsyncs a blob while the broker confirms the message that names it, and answers the
        C-STORE only when both are done.
        """
        if self._stop.is_set():
            raise BrokerUnavailable("publisher is stopped")
        request = _PublishRequest(exchange, routing_key, body, dict(headers or {}), mandatory)
        self._requests.put(request)
        return PendingConfirm(request.future, f"{exchange}/{routing_key}", self._confirm_timeout)

    # --- the connection's own thread ------------------------------------------------------------

    def _set_connected(self, value: bool) -> None:
        if value != self._connected.is_set():
            (self._connected.set if value else self._connected.clear)()
            if self._on_state:
                self._on_state(value)

    def _ensure_connection(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop_connection()
        now = time.monotonic()
        if now < self._next_attempt:
            raise BrokerUnavailable("RabbitMQ is unreachable (waiting before the next connection attempt)")
        try:
            connection = open_connection(self._url, self._heartbeat, self._name)
            channel = connection.channel()
            channel.confirm_delivery()
            self._topology.declare(channel)
        except BrokerUnavailable:
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            raise
        except _CONNECTION_ERRORS as exc:
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 5.0)
            raise BrokerUnavailable(f"cannot set up the publishing channel: {exc!r}") from None
        self._connection, self._channel = connection, channel
        self._backoff = 0.5
        self._set_connected(True)
        log.info("broker.connected", role="publisher", url=redact_url(self._url))
        return channel

    def _drop_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            self._set_connected(False)
            try:
                if connection.is_open:
                    connection.close()
            except _CONNECTION_ERRORS:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                request = self._requests.get(timeout=0.5)
            except queue.Empty:
                self._keep_alive()
                continue
            if request is None:
                break
            self._handle(request)
        while True:
            try:
                pending = self._requests.get_nowait()
            except queue.Empty:
                break
            if pending is not None and pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(BrokerUnavailable("publisher is stopping"))
        self._drop_connection()

    def _keep_alive(self) -> None:
        if self._connection is None:
            # Reconnect in the background so readiness recovers without waiting for traffic.
            try:
                self._ensure_connection()
            except BrokerUnavailable:
                pass
            return
        try:
            self._connection.process_data_events(time_limit=0)
        except _CONNECTION_ERRORS as exc:
            log.warning("broker.connection-lost", role="publisher", error=repr(exc))
            self._drop_connection()

    def _handle(self, request: _PublishRequest) -> None:
        if not request.future.set_running_or_notify_cancel():  # the caller gave up (timeout)
            return
        try:
            channel = self._ensure_connection()
        except BrokerUnavailable as exc:
            request.future.set_exception(exc)
            return
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=request.headers,
            content_type="application/dicom" if request.body else None,
        )
        try:
            channel.basic_publish(
                request.exchange,
                request.routing_key,
                request.body,
                properties=properties,
                mandatory=request.mandatory,
            )
        except pika.exceptions.UnroutableError:
            request.future.set_exception(
                BrokerUnavailable(f"message to {request.exchange}/{request.routing_key} is unroutable (no queue)")
            )
            return
        except pika.exceptions.NackError:
            request.future.set_exception(
                BrokerUnavailable(f"RabbitMQ refused the message to {request.exchange}/{request.routing_key}")
            )
            return
        except _CONNECTION_ERRORS as exc:
            log.warning("broker.connection-lost", role="publisher", error=repr(exc))
            self._drop_connection()
            request.future.set_exception(
                PublishOutcomeUnknown(f"connection to RabbitMQ lost while publishing: {exc!r}")
            )
            return
        request.future.set_result(None)


class Settlement(enum.Enum):
    """What becomes of a delivery once its handler is done."""

    ACK = "ack"
    REQUEUE = "requeue"  # handed back to the queue: counts against x-delivery-limit
    DEAD_LETTER = "dead-letter"  # rejected without requeue: the broker dead-letters it


@dataclass(frozen=True)
class Delivery:
    """One message received from a queue, with what is needed to settle it later."""

    queue: str
    routing_key: str
    delivery_tag: int
    redelivered: bool
    headers: dict[str, Any]
    body: bytes
    generation: int
    exchange: str = ""

    @property
    def delivery_count(self) -> int:
        """How many times the broker delivered this message before (quorum queues count it)."""
        value = self.headers.get("x-delivery-count", 0)
        try:
            return max(0, int(value))
        except (TypeError, ValueError):
            return 0


class Consumer:
    """Consumes queues in a background thread and dispatches each delivery to the service."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        queues: list[str],
        dispatch: Callable[[Delivery], None],
        *,
        prefetch: int = 20,
        heartbeat: int = 30,
        name: str = "karnak-consumer",
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._url = url
        self._topology = topology
        self._queues = list(queues)
        self._queue_of: dict[str, str] = {}  # consumer tag -> queue, on the connection's thread only
        self._dispatch = dispatch
        self._prefetch = prefetch
        self._heartbeat = heartbeat
        self._name = name
        self._on_state = on_state
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._generation = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def start(self) -> Consumer:
        self._thread.start()
        return self

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop taking deliveries, let the ones in flight finish (up to `drain_timeout`), disconnect."""
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stop.set()
        self._thread.join(timeout=drain_timeout + 10)

    @property
    def queues(self) -> list[str]:
        with self._lock:
            return list(self._queues)

    def set_queues(self, queues: list[str], topology: Topology) -> None:
        """Consume `queues` from now on (declared with `topology`): new ones start, removed ones stop.

        A removed queue is only no longer consumed: it and its messages stay. Deliveries already taken
        from it are settled as usual.
        """
        with self._lock:
            self._queues = list(queues)
            self._topology = topology
            connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(self._sync_consumers)
            except _CONNECTION_ERRORS:
                pass  # the next connection consumes the new set

    def _sync_consumers(self) -> None:
        channel = self._channel
        if channel is None or not channel.is_open:
            return
        with self._lock:
            wanted, topology = list(self._queues), self._topology
        topology.declare(channel)
        consuming = set(self._queue_of.values())
        for tag, name in list(self._queue_of.items()):
            if name not in wanted:
                channel.basic_cancel(tag)
                del self._queue_of[tag]
        for name in wanted:
            if name not in consuming:
                self._queue_of[channel.basic_consume(name, self._on_message, auto_ack=False)] = name
        log.info("broker.consuming", queues=",".join(wanted))

    def is_current(self, delivery: Delivery) -> bool:
        """Whether `delivery` came on the live connection; if not, the broker has it back and will redeliver it."""
        with self._lock:
            return self._connection is not None and delivery.generation == self._generation

    def settle(self, delivery: Delivery, settlement: Settlement, then: Callable[[], None] | None = None) -> None:
        """Ack, requeue or dead-letter a delivery; safe from any thread.

        `then` runs on the connection's thread once the settlement is sent (never if it cannot be): the
        runtime deletes an acked message's blob from there, so a blob never goes before its ack.
        """
        with self._lock:
            connection = self._connection
            current = self._generation
            if delivery.generation == current:
                self._in_flight -= 1
        if delivery.generation != current or connection is None:
            # Its channel is gone; the broker has already put the message back in its queue.
            log.info("broker.stale-settlement", queue=delivery.queue, settlement=settlement.value)
            return

        def do() -> None:
            channel = self._channel
            if channel is None or not channel.is_open or self._generation != delivery.generation:
                return
            if settlement is Settlement.ACK:
                channel.basic_ack(delivery.delivery_tag)
            else:
                channel.basic_nack(delivery.delivery_tag, requeue=settlement is Settlement.REQUEUE)
            if then is not None:
                then()

        try:
            connection.add_callback_threadsafe(do)
        except _CONNECTION_ERRORS:
            log.info("broker.stale-settlement", queue=delivery.queue, settlement=settlement.value)

    # --- the connection's own thread ------------------------------------------------------------

    def _set_connected(self, value: bool) -> None:
        if value != self._connected.is_set():
            (self._connected.set if value else self._connected.clear)()
            if self._on_state:
                self._on_state(value)

    def _on_message(self, channel: BlockingChannel, method: Any, properties: Any, body: bytes) -> None:
        delivery = Delivery(
            queue=self._queue_of.get(method.consumer_tag, ""),
            routing_key=method.routing_key,
            delivery_tag=method.delivery_tag,
            redelivered=method.redelivered,
            headers=dict(properties.headers or {}),
            body=body,
            generation=self._generation,
            exchange=method.exchange,
        )
        with self._lock:
            self._in_flight += 1
        self._dispatch(delivery)

    def _connect(self) -> None:
        connection = open_connection(self._url, self._heartbeat, self._name)
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            with self._lock:
                topology, queues = self._topology, list(self._queues)
            topology.declare(channel)
            self._queue_of = {}
            with self._lock:
                self._generation += 1
                self._in_flight = 0
                self._connection, self._channel = connection, channel
            for name in queues:
                tag = channel.basic_consume(name, self._on_message, auto_ack=False)
                self._queue_of[tag] = name
        except _CONNECTION_ERRORS:
            with self._lock:
                self._connection = self._channel = None
            try:
                connection.close()
            except _CONNECTION_ERRORS:
                pass
            raise
        self._set_connected(True)
        log.info("broker.connected", role="consumer", queues=",".join(queues), url=redact_url(self._url))

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._connect()
                backoff = 0.5
                assert self._connection is not None
                while not self._stop.is_set():
                    self._connection.process_data_events(time_limit=0.5)
                    if self._channel is None or not self._channel.is_open:
                        # The broker closed the channel alone (a consumer timeout, an ack of an unknown
                        # tag): the connection looks fine but nothing arrives any more. Start over.
                        raise BrokerUnavailable("the broker closed the consuming channel")
                self._drain()
            except BrokerUnreachable:
                pass  # said once by `REACHABILITY`; retried quietly
            except (BrokerUnavailable, *_CONNECTION_ERRORS) as exc:
                log.warning("broker.connection-lost", role="consumer", error=repr(exc), retry_in=backoff)
            finally:
                self._disconnect()
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _drain(self) -> None:
        """Cancel the consumers and keep serving settlements until the work in flight is done."""
        assert self._connection is not None and self._channel is not None
        for tag in list(self._queue_of):
            self._channel.basic_cancel(tag)
        deadline = getattr(self, "_drain_deadline", time.monotonic() + 30)
        while self.in_flight > 0 and time.monotonic() < deadline:
            self._connection.process_data_events(time_limit=0.1)
        # Let the last settlements scheduled by add_callback_threadsafe run.
        self._connection.process_data_events(time_limit=0)

    def _disconnect(self) -> None:
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
        self._set_connected(False)
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except _CONNECTION_ERRORS:
                pass


def queue_exists(url: str, queue: str) -> bool:
    """Whether a queue exists on the broker (a passive declare; the broker closes the channel if not)."""
    connection = open_connection(url, name="karnak-queue-check")
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise BrokerUnavailable(f"cannot check queue {queue}: {exc.reply_text}") from None
    except _CONNECTION_ERRORS as exc:
        raise BrokerUnavailable(f"cannot check queue {queue}: {exc!r}") from None
    finally:
        try:
            if connection.is_open:
                connection.close()
        except _CONNECTION_ERRORS:
            pass


class Connectable(Protocol):
    """Anything with a `connected` state (a publisher)."""

    @property
    def connected(self) -> bool: ...


def wait_until_settleable(consumer: Consumer, publisher: Connectable, delivery: Delivery, poll: float = 0.1) -> bool:
    """Hold a delivery until the publisher is connected; False once the delivery's own connection is gone.

    Every outcome of a handler needs a publish (an output, an event, a retry, a park) and then an ack on the
    delivery's connection. Handled while either is down, the work is done for nothing: a C-STORE made
    then is made again when the message comes back, and a requeue while the publisher reconnects brings
    the message straight back, burning its x-delivery-limit until it is dead-lettered without a reason.
    """
    while not publisher.connected:
        if not consumer.is_current(delivery):
            return False
        time.sleep(poll)
    return consumer.is_current(delivery)


# --- control traffic: broadcasts every instance sees ---------------------------------------------


@dataclass(frozen=True)
class Broadcast:
    """An exchange a `ControlConnection` listens on, with the routing key it binds (ignored by a fanout)."""

    exchange: str
    exchange_type: str  # "fanout" or "topic"
    routing_key: str = ""


class ControlConnection:
    """One connection of a service instance for control traffic: broadcasts in, small reports out.

    It listens through a queue of its own (server-named, exclusive, auto-delete) bound to each broadcast,
    so every instance gets every message and nothing piles up for an instance that stopped; a message
    missed while disconnected is the listener's to make up for (the 30 s revision check). `send` hands a
    message to the connection's thread, which publishes it unconfirmed: status reports are periodic and
    a lost one is replaced by the next. Reconnects with back-off like the `Consumer`.
    """

    def __init__(
        self,
        url: str,
        listen: list[Broadcast],
        on_message: Callable[[str, bytes], None],
        *,
        heartbeat: int = 30,
        name: str = "karnak-control",
        on_connected: Callable[[], None] | None = None,
        declare_exchanges: bool = True,
    ) -> None:
        self._url = url
        self._listen = listen
        # False with a per-service broker user (broker.declare_topology false): only check the exchanges.
        self._declare_exchanges = declare_exchanges
        self._on_message = on_message
        self._heartbeat = heartbeat
        self._name = name
        self._on_connected = on_connected
        self._outbox: queue.Queue[tuple[str, str, bytes]] = queue.Queue(maxsize=100)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> ControlConnection:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def send(self, exchange: str, routing_key: str, body: bytes) -> None:
        """Publish soon from the connection's thread; dropped while disconnected (a report is replaced by the next)."""
        if not self.connected:
            return
        try:
            self._outbox.put_nowait((exchange, routing_key, body))
        except queue.Full:
            pass

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            connection: BlockingConnection | None = None
            try:
                connection = open_connection(self._url, self._heartbeat, self._name)
                channel = connection.channel()
                for broadcast in self._listen:
                    channel.exchange_declare(
                        broadcast.exchange,
                        exchange_type=broadcast.exchange_type,
                        durable=True,
                        passive=not self._declare_exchanges,
                    )
                declared = channel.queue_declare("", exclusive=True, auto_delete=True)
                own_queue = declared.method.queue
                for broadcast in self._listen:
                    channel.queue_bind(own_queue, broadcast.exchange, routing_key=broadcast.routing_key or None)
                channel.basic_consume(
                    own_queue,
                    lambda _ch, method, _props, body: self._on_message(method.exchange, body),
                    auto_ack=True,
                )
                self._connected.set()
                backoff = 0.5
                if self._on_connected is not None:
                    self._on_connected()
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.2)
                    while True:
                        try:
                            exchange, routing_key, body = self._outbox.get_nowait()
                        except queue.Empty:
                            break
                        channel.basic_publish(exchange, routing_key, body)
            except BrokerUnreachable:
                pass  # said once by `REACHABILITY`; retried quietly
            except _CONNECTION_ERRORS as exc:
                log.warning("broker.connection-lost", role="control", error=repr(exc), retry_in=backoff)
            except Exception:  # a bug in a message handler must not end the service's control traffic
                log.error("control.crashed", exc_info=True)
            finally:
                self._connected.clear()
                if connection is not None and connection.is_open:
                    try:
                        connection.close()
                    except _CONNECTION_ERRORS:
                        pass
            if not self._stop.is_set():
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


@dataclass(frozen=True)
class QueueState:
    """A queue's ready messages and consumers, as RabbitMQ says."""

    name: str
    messages: int
    consumers: int


def inspect_queues(url: str, names: list[str]) -> dict[str, QueueState | None]:
    """The state of each named queue (None: RabbitMQ has no such queue), by passive declares.

    A passive declare of a missing queue closes its channel (404): each miss costs a new channel.
    """
    connection = open_connection(url, name="karnak-queues")
    found: dict[str, QueueState | None] = {}
    try:
        channel = connection.channel()
        for name in names:
            try:
                method = channel.queue_declare(name, passive=True).method
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise BrokerUnavailable(f"RabbitMQ refused to describe queue {name}: {exc.reply_text}") from None
                found[name] = None
                channel = connection.channel()
                continue
            found[name] = QueueState(name, int(method.message_count), int(method.consumer_count))
    except _CONNECTION_ERRORS as exc:
        raise BrokerUnavailable(f"lost RabbitMQ while describing queues: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()
    return found
