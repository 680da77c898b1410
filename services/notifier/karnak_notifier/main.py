"""The notifier on the service runtime: the events queue, the windows and the SMTP server wired together.

Each event is handed to the notifier's windows with a deferred settlement: it is acked once the email
that counts it was accepted, handed back to its queue when that email keeps failing, and dropped (to be
delivered again) when the consumer's connection is lost. A revision that changes neither the notified
destinations nor the SMTP settings keeps the running notifier and its open windows; one that does starts
a new notifier for the events to come, while the previous one finishes the windows it holds.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass

from karnak_notifier.notifier import Disposition, Mailer, Notifier
from karnak_notifier.settings import notified_destinations, window_capacity
from karnak_notifier.smtp import SmtpMailer, SmtpServer
from karnak_shared.broker import inspect_queues
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.logs import EventLogger
from karnak_shared.service import Ack, Deferred, EventMessage, Park, Providers, Requeue, Service, Work, consume
from karnak_shared.service.live_config import run_live
from karnak_shared.topology import Topology

log = EventLogger("karnak.notifier")

SERVICE = "notifier"


def _outcome(disposition: Disposition) -> Ack | Requeue | Park:
    if disposition is Disposition.DONE:
        return Ack()
    if disposition is Disposition.RETURN:
        return Requeue("its email could not be sent for too long: the event comes again in a new window")
    return Park("the notifier could not take this event", "handler-crashed")


def settle(token: Deferred, disposition: Disposition) -> None:
    """How the notifier settles an event: through its delivery's deferred outcome."""
    token.settle(_outcome(disposition))


@dataclass(frozen=True)
class Notifying:
    """The notifier running for a configuration, and what of the configuration it was built from."""

    notifier: Notifier[Deferred]
    built_from: object


def _built_from(config: GatewayConfig) -> object:
    return (notified_destinations(config), config.smtp)


def notifier_queue(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.notifier_queue] if topology.notifier else []


def _prefetch(config: GatewayConfig) -> int:
    return window_capacity(notified_destinations(config))


class NotifierService(Service[Notifying]):
    """Aggregates transfer events into windows and emails each window's studies."""

    name = SERVICE
    # Unsent windows hold deliveries that are never settled: stopping waits only for the last acks.
    drain_seconds = 1.0

    def __init__(self, mailer: Callable[[GatewayConfig], Mailer] | None = None) -> None:
        self._mailer = mailer or (lambda config: SmtpMailer(SmtpServer.from_config(config.smtp)))
        self._current: Notifying | None = None
        self._running: list[Notifier[Deferred]] = []
        self._lock = threading.Lock()

    def topology(self, config: GatewayConfig) -> Topology:
        # Only the notifier declares its queue: a gateway without one must not pile events up. Nor does an
        # idle notifier (no destination has notifications): consuming every event to ack it unsent cost
        # RabbitMQ and this process about a millisecond per instance for nothing.
        # A queue left by an earlier configuration (or declared by a service whose configuration still
        # notifies) is drained as before: left alone, it would fill up until RabbitMQ blocks publishers.
        topology = Topology.from_config(config)
        idle = not notified_destinations(config) and not _queue_exists(config, topology.notifier_queue)
        return dataclasses.replace(topology, notifier=not idle)

    def configure(self, config: GatewayConfig, providers: Providers) -> Notifying:
        destinations = notified_destinations(config)
        built_from = _built_from(config)
        with self._lock:
            current = self._current
            if current is not None and current.built_from == built_from and current.notifier.alive:
                return current  # the same windows go on
        notifier: Notifier[Deferred] = Notifier(
            destinations, self._mailer(config), config.smtp.sender, settle, retry_delays=config.broker.retry_delays
        ).start()
        state = Notifying(notifier, built_from)
        with self._lock:
            self._current = state
            self._running.append(notifier)
        if destinations:
            log.info("notifier.started", destinations=",".join(sorted(destinations)), prefetch=_prefetch(config))
        else:
            log.info("notifier.idle", reason="no destination has notifications: events are acked unsent")
        return state

    def release(self, state: Notifying) -> None:
        # A replaced notifier is released once every event it held was settled: its windows are done.
        with self._lock:
            if state is self._current:
                return
            if state.notifier in self._running:
                self._running.remove(state.notifier)
        state.notifier.stop()

    def stop(self) -> None:
        """Stop sending: events of unsent windows go back to the queue when the connection closes."""
        with self._lock:
            running, self._running = list(self._running), []
        for notifier in running:
            notifier.stop()

    def connection_lost(self) -> None:
        with self._lock:
            running = list(self._running)
        for notifier in running:
            notifier.connection_lost()

    def readiness(self) -> dict[str, Callable[[], bool]]:
        return {"notifier": lambda: self._current is not None and self._current.notifier.alive}

    @consume(notifier_queue, message=EventMessage, workers=1, prefetch=_prefetch)
    def take(self, message: EventMessage, work: Work[Notifying]) -> Deferred:
        """Hand an event to its destination's window; it is settled once its email is sent."""
        deferred = work.defer()
        work.state.notifier.offer(message.event, deferred)
        return deferred


def _queue_exists(config: GatewayConfig, queue: str) -> bool:
    """Whether RabbitMQ has `queue`; True when it cannot say (the notifier then consumes, as it always did)."""
    try:
        return inspect_queues(config.broker.url.get_secret_value(), [queue])[queue] is not None
    except BrokerUnavailable:
        return True


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the notifier until SIGTERM/SIGINT, following the configuration's revisions."""
    notified_destinations(config)  # a bad notification setting stops the start-up
    run_live(NotifierService(), config, metrics_port)
