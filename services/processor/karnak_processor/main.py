"""Entry point of the processor: wires configuration, router, publisher and the `received` consumer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from karnak_processor.processor import Processor
from karnak_processor.routing import Router
from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement, Verdict, wait_until_settleable
from karnak_shared.config import GatewayConfig
from karnak_shared.database import open_database
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.retry import RetryPolicy
from karnak_shared.runtime import prepare_service, wait_for_signal

log = EventLogger("karnak.processor")
WORKERS = 4


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the processor until SIGTERM/SIGINT."""
    # Building the router loads every profile and opens every pseudonym source: a destination that cannot
    # work stops the start-up with its field named, before anything is consumed.
    session_factory = None
    if any(d.deidentification and d.deidentification.pseudonym.type == "cache" for _, d in config.destinations()):
        session_factory = open_database(config.database.url.get_secret_value())
    router = Router(config, base_dir=config.base_dir, session_factory=session_factory)
    ctx = prepare_service("processor", config, metrics_port)
    publisher = Publisher(
        ctx.broker_url,
        ctx.topology,
        heartbeat=config.broker.heartbeat,
        confirm_timeout=config.broker.confirm_timeout,
        name="karnak-processor-publisher",
        on_state=broker_state_recorder("processor", "publisher"),
    ).start()
    processor = Processor(
        router,
        publisher,
        ctx.topology,
        ctx.blobs,
        config.blob_store.max_inline_bytes,
        RetryPolicy(tuple(config.broker.retry_delays)),
    )
    workers = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="processor-worker")

    def work(delivery: Delivery) -> None:
        if not wait_until_settleable(consumer, publisher, delivery):
            consumer.settle(delivery, Settlement.REQUEUE)  # already back in its queue
            return
        try:
            verdict = processor.handle(delivery)
        except Exception:  # a bug must not kill the worker; the message comes back
            log.error("instance.handler-crashed", exc_info=True, queue=delivery.queue)
            verdict = Verdict(Settlement.REQUEUE)
        consumer.settle(delivery, verdict.settlement)
        if verdict.delete_blob:
            processor.delete_blob(verdict.delete_blob)

    def dispatch(delivery: Delivery) -> None:
        workers.submit(work, delivery)

    consumer = Consumer(
        ctx.broker_url,
        ctx.topology,
        [ctx.topology.received_queue],
        dispatch,
        prefetch=config.broker.prefetch,
        heartbeat=config.broker.heartbeat,
        name="karnak-processor-consumer",
        on_state=broker_state_recorder("processor", "consumer"),
    ).start()
    ctx.ops.add_check("broker", lambda: consumer.connected and publisher.connected)
    try:
        wait_for_signal(ctx.stopping)
    finally:
        log.info("service.stopping")
        consumer.stop()
        workers.shutdown(wait=True)
        publisher.stop()
        ctx.ops.stop()
