"""Entry point of the stow-sender: one consumer over every stow send queue, one worker per destination."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement, wait_until_settleable
from karnak_shared.config import GatewayConfig, StowDestination
from karnak_shared.headers import parse_headers
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.runtime import ServiceContext
from karnak_shared.service.authentication import Signer
from karnak_shared.service.live_config import run_swapping
from karnak_shared.service.providers import SignedPublisher
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology
from karnak_stow_sender.batching import BatchLimits
from karnak_stow_sender.client import StowClient
from karnak_stow_sender.sender import StowSender
from karnak_stow_sender.settings import StowSenderSettings, load_settings
from karnak_stow_sender.workers import DestinationWorker

log = EventLogger("karnak.stow-sender")


def stow_destinations(config: GatewayConfig) -> list[StowDestination]:
    """The STOW-RS destinations of the configuration."""
    return [dest for _, dest in config.destinations() if isinstance(dest, StowDestination)]


class StowSenderService:
    """The stow-sender's moving parts (publisher, consumer, workers), startable in-process for tests."""

    def __init__(
        self,
        config: GatewayConfig,
        topology: Topology,
        blobs: BlobStore,
        settings: StowSenderSettings,
        on_state: Callable[[str], Callable[[bool], None] | None] = lambda role: None,
    ) -> None:
        destinations = stow_destinations(config)
        # This sender feeds the sharer's queue, so it declares it when any destination shares into albums.
        self.topology = dataclasses.replace(topology, kheops=any(dest.kheops_albums for dest in destinations))
        url = config.broker.url.get_secret_value()
        self.publisher = Publisher(
            url,
            self.topology,
            heartbeat=config.broker.heartbeat,
            confirm_timeout=config.broker.confirm_timeout,
            name="karnak-stow-sender-publisher",
            on_state=on_state("publisher"),
        )
        # Signed with the gateway's key, as the runtime signs: the kheops-sharer parks unsigned share requests.
        signed = SignedPublisher(self.publisher, Signer(config.secrets.key_bytes()))
        self.sender = StowSender(signed, self.topology, blobs, RetryPolicy(tuple(config.broker.retry_delays)))
        limits = BatchLimits(settings.batch_size, settings.max_wait, settings.max_batch_bytes)
        if not settings.verify_tls and destinations:
            log.warning("tls.verification-off", reason="stow_sender.verify_tls is false: certificates are not checked")
        self.workers = {
            self.topology.send_queue("stow", dest.id): DestinationWorker(
                [
                    StowClient(dest.id, dest.url, parse_headers(dest.headers), settings)
                    for _ in range(settings.concurrency)
                ],
                self._work,
                limits,
            )
            for dest in destinations
        }
        # A batch can only fill from what the broker has handed over: one batch per request in flight, and
        # one more forming behind them.
        prefetch = max(config.broker.prefetch, (settings.concurrency + 1) * settings.batch_size)
        self.consumer = Consumer(
            url,
            self.topology,
            list(self.workers),
            lambda delivery: self.workers[delivery.queue].submit(delivery),
            prefetch=prefetch,
            heartbeat=config.broker.heartbeat,
            name="karnak-stow-sender-consumer",
            on_state=on_state("consumer"),
        )

    @property
    def connected(self) -> bool:
        if not self.workers:
            return True  # idle: nothing to be connected for
        return self.consumer.connected and self.publisher.connected

    def start(self) -> StowSenderService:
        if not self.workers:
            # Nothing to send: no connection, no thread; a revision with a stow destination starts them.
            log.info("sender.idle", reason="the configuration has no stow destination")
            return self
        self.publisher.start()
        for worker in self.workers.values():
            worker.start()
        self.consumer.start()
        return self

    def stop(self) -> None:
        if not self.workers:
            return
        self.consumer.stop()
        for worker in self.workers.values():
            worker.stop()
        self.publisher.stop()

    def _work(self, batch: list[Delivery], client: StowClient) -> None:
        # As in the dicom-sender: a batch whose acks cannot be sent is not posted (it would be posted twice).
        settleable = []
        for delivery in batch:
            if wait_until_settleable(self.consumer, self.publisher, delivery):
                settleable.append(delivery)
            else:
                self.consumer.settle(delivery, Settlement.REQUEUE)  # already back in its queue
        batch = settleable
        if not batch:
            return
        try:
            verdicts = self.sender.handle_batch(batch, client)
        except Exception:  # a bug must not lose messages: they come back
            log.error("batch.handler-crashed", exc_info=True, destination=client.destination_id)
            for delivery in batch:
                self.consumer.settle(delivery, Settlement.REQUEUE)
            return
        for delivery, verdict in verdicts:
            self.consumer.settle(delivery, verdict.settlement)
            if verdict.delete_blob:
                self.sender.delete_blob(verdict.delete_blob)


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the stow-sender until SIGTERM/SIGINT, following the configuration's revisions."""
    load_settings(config)  # a bad setting stops the start-up before anything connects

    def build(config: GatewayConfig, ctx: ServiceContext) -> StowSenderService:
        return StowSenderService(
            config,
            Topology.from_config(config),
            ctx.blobs,
            load_settings(config),
            on_state=lambda role: broker_state_recorder("stow-sender", role),
        ).start()

    run_swapping("stow-sender", config, metrics_port, build, relevant=stow_destinations)
