"""Entry point of the notifier: the events queue, the windows and the SMTP server wired together."""

from __future__ import annotations

import dataclasses

import pika

from karnak_notifier.notifier import Disposition, Mailer, Notifier
from karnak_notifier.settings import notified_destinations, window_capacity
from karnak_notifier.smtp import SmtpMailer, SmtpServer
from karnak_shared.broker import Consumer, Delivery, Settlement, open_connection
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.runtime import ServiceContext, prepare_service, wait_for_signal

log = EventLogger("karnak.notifier")

SERVICE = "notifier"
SETTLEMENTS = {
    Disposition.DONE: Settlement.ACK,
    Disposition.RETURN: Settlement.REQUEUE,
    Disposition.POISON: Settlement.DEAD_LETTER,
}


class NotifierService:
    """The running notifier: a consumer of `<prefix>.notifier` feeding a `Notifier` thread."""

    def __init__(self, ctx: ServiceContext, consumer: Consumer | None, notifier: Notifier[Delivery]) -> None:
        self.ctx = ctx
        self.consumer = consumer
        self.notifier = notifier
        self._stopped = False

    @classmethod
    def start(
        cls, config: GatewayConfig, metrics_port: int | None = None, mailer: Mailer | None = None
    ) -> NotifierService:
        """Check the configuration, then start consuming; raise `ConfigError` before anything runs."""
        destinations = notified_destinations(config)
        ctx = prepare_service(SERVICE, config, metrics_port)
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
            log.warning("notifier.idle", reason="no destination has notifications: no queue, nothing consumed")
            return cls(ctx, None, notifier)
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
        return cls(ctx, consumer, notifier)

    @property
    def ready(self) -> bool:
        return not self.ctx.ops.failing_checks()

    def stop(self) -> None:
        """Stop sending, then disconnect: events of unsent windows go back to the queue."""
        if self._stopped:
            return
        self._stopped = True
        log.info("service.stopping")
        self.notifier.stop()
        # Unsent windows hold deliveries that are never settled: wait only for the last acks to go out.
        if self.consumer is not None:
            self.consumer.stop(drain_timeout=1.0)
        self.ctx.ops.stop()


def _queue_exists(url: str, queue: str) -> bool:
    """Whether RabbitMQ has `queue`; True when it cannot say (the notifier then consumes, as it always did)."""
    try:
        connection = open_connection(url, name="karnak-notifier-check")
    except BrokerUnavailable:
        return True
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        return bool(exc.reply_code != 404)
    except pika.exceptions.AMQPError:
        return True
    finally:
        if connection.is_open:
            connection.close()


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the notifier until SIGTERM/SIGINT."""
    service = NotifierService.start(config, metrics_port)
    try:
        wait_for_signal(service.ctx.stopping)
    finally:
        service.stop()
