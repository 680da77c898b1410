"""Entry point of the notifier: the events queue, the windows and the SMTP server wired together."""

from __future__ import annotations

import dataclasses

from karnak_notifier.notifier import Disposition, Mailer, Notifier
from karnak_notifier.settings import notified_destinations, window_capacity
from karnak_notifier.smtp import SmtpMailer, SmtpServer
from karnak_shared.broker import Consumer, Delivery, Settlement, inspect_queues
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.runtime import ServiceContext, prepare_service
from karnak_shared.service.live_config import run_swapping
from karnak_shared.topology import Topology

log = EventLogger("karnak.notifier")

SERVICE = "notifier"
SETTLEMENTS = {
    Disposition.DONE: Settlement.ACK,
    Disposition.RETURN: Settlement.REQUEUE,
    Disposition.POISON: Settlement.DEAD_LETTER,
}


class NotifierService:
    """The running notifier: a consumer of `<prefix>.notifier` feeding a `Notifier` thread."""

    def __init__(
        self, ctx: ServiceContext, consumer: Consumer | None, notifier: Notifier[Delivery], owns_ops: bool = True
    ) -> None:
        self.ctx = ctx
        self.consumer = consumer
        self.notifier = notifier
        self._owns_ops = owns_ops
        self._stopped = False

    @classmethod
    def start(
        cls,
        config: GatewayConfig,
        metrics_port: int | None = None,
        mailer: Mailer | None = None,
        ctx: ServiceContext | None = None,
    ) -> NotifierService:
        """Check the configuration, then start consuming; raise `ConfigError` before anything runs.

        Given `ctx` (a revision applied to a running notifier), its ops endpoint is used and left running.
        """
        destinations = notified_destinations(config)
        owns_ops = ctx is None
        if ctx is None:
            ctx = prepare_service(SERVICE, config, metrics_port)
        else:
            ctx = dataclasses.replace(ctx, config=config, topology=Topology.from_config(config))
        # Only the notifier declares its queue: a gateway without one must not pile events up. Nor does an
        # idle notifier (no destination has notifications): consuming every event to ack it unsent cost
        # RabbitMQ and this process about a millisecond per instance for nothing.
        # A queue left by an earlier configuration (or declared by a service whose configuration still
        # notifies) is drained as before: left alone, it would fill up until RabbitMQ blocks publishers.
        idle = not destinations and not _queue_exists(ctx.broker_url, ctx.topology.notifier_queue)
        topology = dataclasses.replace(ctx.topology, notifier=not idle)
        ctx.topology = topology
        consumer: Consumer | None = None
        notifier: Notifier[Delivery] | None = None
        if owns_ops:
            # Registered before anything starts: /readyz answers "ready" while it has no check at all.
            ctx.ops.add_check("broker", lambda: idle or (consumer is not None and consumer.connected))
            ctx.ops.add_check("notifier", lambda: notifier is not None and notifier.alive)

        def settle(delivery: Delivery, disposition: Disposition) -> None:
            assert consumer is not None
            consumer.settle(delivery, SETTLEMENTS[disposition])

        notifier = Notifier(
            destinations,
            mailer or SmtpMailer(SmtpServer.from_config(config.smtp)),
            config.smtp.sender,
            settle,
            retry_delays=config.broker.retry_delays,
        ).start()
        record = broker_state_recorder(SERVICE, "consumer")

        def on_state(connected: bool) -> None:
            record(connected)
            if not connected and notifier is not None:
                notifier.connection_lost()

        if idle:
            log.info("notifier.idle", reason="no destination has notifications: no queue, nothing consumed")
            return cls(ctx, None, notifier, owns_ops)
        prefetch = window_capacity(destinations)
        consumer = Consumer(
            ctx.broker_url,
            topology,
            [topology.notifier_queue],
            lambda delivery: notifier.offer(delivery.body, delivery),
            prefetch=prefetch,
            heartbeat=config.broker.heartbeat,
            name="karnak-notifier-consumer",
            on_state=on_state,
        ).start()
        if destinations:
            log.info("notifier.started", destinations=",".join(sorted(destinations)), prefetch=prefetch)
        else:
            log.warning("notifier.draining", reason="no destination has notifications: events are acked unsent")
        return cls(ctx, consumer, notifier, owns_ops)

    @property
    def ready(self) -> bool:
        return not self.ctx.ops.failing_checks()

    @property
    def connected(self) -> bool:
        return (self.consumer is None or self.consumer.connected) and self.notifier.alive

    def stop(self) -> None:
        """Stop sending, then disconnect: events of unsent windows go back to the queue."""
        if self._stopped:
            return
        self._stopped = True
        if self._owns_ops:
            log.info("service.stopping")
        self.notifier.stop()
        # Unsent windows hold deliveries that are never settled: wait only for the last acks to go out.
        if self.consumer is not None:
            self.consumer.stop(drain_timeout=1.0)
        if self._owns_ops:
            self.ctx.ops.stop()


def _queue_exists(url: str, queue: str) -> bool:
    """Whether RabbitMQ has `queue`; True when it cannot say (the notifier then consumes, as it always did)."""
    try:
        return inspect_queues(url, [queue])[queue] is not None
    except BrokerUnavailable:
        return True


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the notifier until SIGTERM/SIGINT, following the configuration's revisions.

    A new revision starts a notifier for its windows and stops the old one: the old one's open windows
    are left unsent and their events go back to the queue, to be counted in the new one's windows.
    """
    notified_destinations(config)  # a bad notification setting stops the start-up

    def build(config: GatewayConfig, ctx: ServiceContext) -> NotifierService:
        return NotifierService.start(config, ctx=ctx)

    run_swapping(SERVICE, config, metrics_port, build, relevant=lambda c: (notified_destinations(c), c.smtp))
