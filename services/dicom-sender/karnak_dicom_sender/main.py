"""Entry point of the dicom-sender: one consumer over every dicom send queue, one worker per destination."""

from __future__ import annotations

from karnak_dicom_sender.link import DestinationLink, Peer
from karnak_dicom_sender.sender import DicomSender
from karnak_dicom_sender.settling import SettleAfterConfirm
from karnak_dicom_sender.workers import DestinationWorker
from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement, wait_until_settleable
from karnak_shared.config import DicomDestination, GatewayConfig
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.retry import RetryPolicy
from karnak_shared.runtime import prepare_service, wait_for_signal

log = EventLogger("karnak.dicom-sender")


def peers(config: GatewayConfig) -> list[Peer]:
    """The DICOM destinations of the configuration, with the calling AE title each one is sent from.

    Raises `ConfigError` naming the field when a destination's TLS files cannot be used.
    """
    out = []
    for n, node in enumerate(config.forward_nodes):
        for d, dest in enumerate(node.destinations):
            if not isinstance(dest, DicomDestination):
                continue
            where = f"forward_nodes[{n}].destinations[{d}].tls"
            out.append(
                Peer(
                    destination_id=dest.id,
                    host=dest.hostname,
                    port=dest.port,
                    called_ae=dest.ae_title,
                    calling_ae=dest.ae_title if dest.use_aetitle_destination else node.ae_title,
                    max_pdu=config.dicom_sender.max_pdu_bytes,
                    acse_timeout=config.dicom_sender.acse_timeout,
                    dimse_timeout=config.dicom_sender.dimse_timeout,
                    network_timeout=config.dicom_sender.network_timeout,
                    tls=dest.tls.client_context(where) if dest.tls is not None else None,
                )
            )
    return out


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the dicom-sender until SIGTERM/SIGINT."""
    # Built first: a destination's unusable TLS file is a configuration error before anything starts.
    destinations = peers(config)
    ctx = prepare_service("dicom-sender", config, metrics_port)
    publisher = Publisher(
        ctx.broker_url,
        ctx.topology,
        heartbeat=config.broker.heartbeat,
        confirm_timeout=config.broker.confirm_timeout,
        name="karnak-dicom-sender-publisher",
        on_state=broker_state_recorder("dicom-sender", "publisher"),
    ).start()
    sender = DicomSender(publisher, ctx.topology, ctx.blobs, RetryPolicy(tuple(config.broker.retry_delays)))

    def work(delivery: Delivery, link: DestinationLink) -> None:
        if not wait_until_settleable(consumer, publisher, delivery):
            consumer.settle(delivery, Settlement.REQUEUE)  # already back in its queue: no C-STORE twice
            return
        try:
            verdict = sender.handle(delivery, link)
        except Exception:
            log.error("instance.handler-crashed", exc_info=True, queue=delivery.queue)
            consumer.settle(delivery, Settlement.REQUEUE)
            return
        if verdict.after is not None:
            settler.submit(delivery, verdict)
            return
        consumer.settle(delivery, verdict.settlement)
        if verdict.delete_blob:
            sender.delete_blob(verdict.delete_blob)

    settler = SettleAfterConfirm(lambda delivery, settlement: consumer.settle(delivery, settlement), sender.delete_blob)
    settler.start()
    workers = {
        ctx.topology.send_queue("dicom", peer.destination_id): DestinationWorker(
            DestinationLink(peer), work, config.dicom_sender.idle_release_seconds
        ).start()
        for peer in destinations
    }
    if not workers:
        log.warning("sender.idle", reason="the configuration has no dicom destination")
    consumer = Consumer(
        ctx.broker_url,
        ctx.topology,
        list(workers),
        lambda delivery: workers[delivery.queue].submit(delivery),
        prefetch=config.broker.prefetch,
        heartbeat=config.broker.heartbeat,
        name="karnak-dicom-sender-consumer",
        on_state=broker_state_recorder("dicom-sender", "consumer"),
    ).start()
    ctx.ops.add_check("broker", lambda: consumer.connected and publisher.connected)
    try:
        wait_for_signal(ctx.stopping)
    finally:
        log.info("service.stopping")
        consumer.stop()
        for worker in workers.values():
            worker.stop()
        settler.stop()
        publisher.stop()
        ctx.ops.stop()
