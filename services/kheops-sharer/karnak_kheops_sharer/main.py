"""The kheops-sharer on the service runtime: consumes `kheops.share` messages, shares series into albums.

Its state for a configuration is the albums of the STOW destinations (one API client per URL) and the
share records; with no album it consumes nothing and opens no database (the queue is not even
declared), and a revision that adds an album starts the consumer within seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from karnak_kheops_sharer.kheops import KheopsApi
from karnak_kheops_sharer.records import ShareRecords, album_key
from karnak_kheops_sharer.settings import KheopsSharerSettings, load_settings
from karnak_kheops_sharer.sharer import AlbumTarget, KheopsCalls, Sharer
from karnak_kheops_sharer.tokens import TokenCheck
from karnak_shared.config import GatewayConfig, StowDestination
from karnak_shared.logs import EventLogger
from karnak_shared.service import Outcome, Providers, Service, ShareMessage, Work, consume
from karnak_shared.service.live_config import run_live
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology

log = EventLogger("karnak.kheops-sharer")
SERVICE = "kheops-sharer"
# Threads sharing at once; from the environment (KARNAK_KHEOPS_SHARER_WORKERS), read when the service starts.
WORKERS = load_settings(None).workers


def album_targets(
    config: GatewayConfig,
    settings: KheopsSharerSettings,
    api: Callable[[str, KheopsSharerSettings], KheopsCalls] = KheopsApi,
) -> dict[tuple[str, int], AlbumTarget]:
    """Every Kheops album of the configuration by (destination id, index), one API client per URL."""
    apis: dict[str, KheopsCalls] = {}
    targets: dict[tuple[str, int], AlbumTarget] = {}
    for _, dest in config.destinations():
        if not isinstance(dest, StowDestination):
            continue
        for index, album in enumerate(dest.kheops_albums):
            client = apis.setdefault(album.url_api, api(album.url_api, settings))
            targets[(dest.id, index)] = AlbumTarget(
                destination=dest.id,
                index=index,
                key=album_key(index, album.url_api),
                api=client,
                source_token=album.token_source,
                destination_token=album.token_destination,
            )
    return targets


@dataclass(frozen=True)
class Albums:
    """What the sharer works with for one configuration (None: no album, nothing to do)."""

    sharer: Sharer | None


def kheops_queue(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.kheops_queue] if topology.kheops else []


def _has_albums(config: GatewayConfig) -> bool:
    return any(isinstance(d, StowDestination) and d.kheops_albums for _, d in config.destinations())


class KheopsSharerService(Service[Albums]):
    """Shares each series into each matching album once."""

    name = SERVICE

    def __init__(
        self,
        settings: KheopsSharerSettings | None = None,
        api: Callable[[str, KheopsSharerSettings], KheopsCalls] = KheopsApi,
    ) -> None:
        self._settings = settings
        self._api = api

    def topology(self, config: GatewayConfig) -> Topology:
        # The sharer's queue exists only when some destination shares into albums (else it would fill up).
        return dataclasses.replace(Topology.from_config(config), kheops=_has_albums(config))

    def configure(self, config: GatewayConfig, providers: Providers) -> Albums:
        settings = self._settings or load_settings(config)
        targets = album_targets(config, settings, self._api)
        if not targets:
            log.info("sharer.idle", reason="the configuration has no Kheops album")
            return Albums(None)
        # Opened on first use: a database down for a moment delays shares (retried), it refuses nothing.
        records = ShareRecords(providers.database)
        policy = RetryPolicy(tuple(config.broker.retry_delays))
        return Albums(Sharer(targets, records, TokenCheck(settings.token_cache_seconds), policy))

    @consume(kheops_queue, message=ShareMessage, workers=WORKERS)
    def share(self, message: ShareMessage, work: Work[Albums]) -> Outcome:
        """Share one series into one album (or say why not)."""
        sharer = work.state.sharer
        assert sharer is not None, "the queue is consumed only while the configuration has albums"
        return sharer.handle(message)


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the kheops-sharer until SIGTERM/SIGINT, following the configuration's revisions."""
    load_settings(config)  # a bad setting stops the start-up before anything connects
    run_live(KheopsSharerService(), config, metrics_port)
