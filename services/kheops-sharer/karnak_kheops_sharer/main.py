"""Entry point of the kheops-sharer: consumes `kheops.share` messages and shares series into Kheops albums."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import SQLAlchemyError

from karnak_kheops_sharer.kheops import KheopsApi
from karnak_kheops_sharer.records import ShareRecords, album_key
from karnak_kheops_sharer.settings import KheopsSharerSettings, load_settings
from karnak_kheops_sharer.sharer import AlbumTarget, Sharer
from karnak_kheops_sharer.tokens import TokenCheck
from karnak_shared.broker import Consumer, Delivery, Publisher, Settlement, Verdict, wait_until_settleable
from karnak_shared.config import GatewayConfig, StowDestination
from karnak_shared.database import open_database
from karnak_shared.logs import EventLogger, redact_url
from karnak_shared.ops import broker_state_recorder
from karnak_shared.runtime import ServiceContext
from karnak_shared.service.live_config import run_swapping
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology

log = EventLogger("karnak.kheops-sharer")


def album_targets(config: GatewayConfig, settings: KheopsSharerSettings) -> dict[tuple[str, int], AlbumTarget]:
    """Every Kheops album of the configuration by (destination id, index), one API client per URL."""
    apis: dict[str, KheopsApi] = {}
    targets: dict[tuple[str, int], AlbumTarget] = {}
    for _, dest in config.destinations():
        if not isinstance(dest, StowDestination):
            continue
        for index, album in enumerate(dest.kheops_albums):
            api = apis.setdefault(album.url_api, KheopsApi(album.url_api, settings))
            targets[(dest.id, index)] = AlbumTarget(
                destination=dest.id,
                index=index,
                key=album_key(index, album.url_api),
                api=api,
                source_token=album.token_source,
                destination_token=album.token_destination,
            )
    return targets


class KheopsSharerService:
    """The sharer's moving parts (database, publisher, consumer, workers), startable in-process for tests."""

    def __init__(
        self,
        config: GatewayConfig,
        topology: Topology,
        settings: KheopsSharerSettings,
        on_state: Callable[[str], Callable[[bool], None] | None] = lambda role: None,
    ) -> None:
        self.topology = dataclasses.replace(topology, kheops=True)
        self.targets = album_targets(config, settings)
        self._settings = settings
        self._config = config
        self._on_state = on_state
        self.publisher: Publisher | None = None
        self.consumer: Consumer | None = None
        self._workers: ThreadPoolExecutor | None = None

    @property
    def connected(self) -> bool:
        if self.consumer is None or self.publisher is None:
            return True  # idle: nothing to be connected for
        return self.consumer.connected and self.publisher.connected

    def start(self) -> KheopsSharerService:
        if not self.targets:
            # Without albums there is nothing to share: no database, no queue (it would only fill up).
            log.info("sharer.idle", reason="the configuration has no Kheops album")
            return self
        config = self._config
        database_url = config.database.url.get_secret_value()
        records = ShareRecords(lambda: open_database(database_url))
        try:
            records.open()
        except SQLAlchemyError as exc:
            log.warning("database.unavailable", url=redact_url(database_url), error=type(exc).__name__)
        url = config.broker.url.get_secret_value()
        self.publisher = Publisher(
            url,
            self.topology,
            heartbeat=config.broker.heartbeat,
            confirm_timeout=config.broker.confirm_timeout,
            name="karnak-kheops-sharer-publisher",
            on_state=self._on_state("publisher"),
        ).start()
        self.sharer = Sharer(
            self.targets,
            records,
            TokenCheck(self._settings.token_cache_seconds),
            self.publisher,
            self.topology,
            RetryPolicy(tuple(config.broker.retry_delays)),
        )
        workers = ThreadPoolExecutor(max_workers=self._settings.workers, thread_name_prefix="kheops-sharer")
        self._workers = workers

        def dispatch(delivery: Delivery) -> None:
            workers.submit(self._work, delivery)

        self.consumer = Consumer(
            url,
            self.topology,
            [self.topology.kheops_queue],
            dispatch,
            prefetch=max(1, 2 * self._settings.workers),
            heartbeat=config.broker.heartbeat,
            name="karnak-kheops-sharer-consumer",
            on_state=self._on_state("consumer"),
        ).start()
        return self

    def stop(self) -> None:
        if self.consumer is not None:
            self.consumer.stop()
        if self._workers is not None:
            self._workers.shutdown(wait=True)
        if self.publisher is not None:
            self.publisher.stop()

    def _work(self, delivery: Delivery) -> None:
        assert self.consumer is not None and self.publisher is not None
        # A share made while its ack cannot be sent would be made again when the message comes back.
        if not wait_until_settleable(self.consumer, self.publisher, delivery):
            self.consumer.settle(delivery, Settlement.REQUEUE)  # already back in its queue
            return
        try:
            verdict = self.sharer.handle(delivery)
        except Exception:  # a bug must not kill the worker; the message comes back
            log.error("share.handler-crashed", exc_info=True, queue=delivery.queue)
            verdict = Verdict(Settlement.REQUEUE)
        self.consumer.settle(delivery, verdict.settlement)


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the kheops-sharer until SIGTERM/SIGINT, following the configuration's revisions."""
    load_settings(config)  # a bad setting stops the start-up before anything connects

    def build(config: GatewayConfig, ctx: ServiceContext) -> KheopsSharerService:
        return KheopsSharerService(
            config,
            Topology.from_config(config),
            load_settings(config),
            on_state=lambda role: broker_state_recorder("kheops-sharer", role),
        ).start()

    run_swapping("kheops-sharer", config, metrics_port, build)
