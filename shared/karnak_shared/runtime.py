"""What every service does around its own logic: configuration, logging, ops endpoint, signals."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from types import FrameType

from karnak_shared.blobstore import BlobStore, open_blob_store
from karnak_shared.config import GatewayConfig
from karnak_shared.logs import configure_logging
from karnak_shared.ops import OpsServer
from karnak_shared.topology import Topology


@dataclass
class ServiceContext:
    """The dependencies a service's entry point wires: configuration, topology, blob store, ops server."""

    name: str
    config: GatewayConfig
    topology: Topology
    blobs: BlobStore
    ops: OpsServer
    stopping: threading.Event

    @property
    def broker_url(self) -> str:
        return self.config.broker.url.get_secret_value()


def prepare_service(name: str, config: GatewayConfig, metrics_port: int | None = None) -> ServiceContext:
    """Configure logging, open the blob store and start the ops endpoint of a service."""
    configure_logging(name, config.logging.level, config.logging.format)
    port = metrics_port if metrics_port is not None else config.metrics.ports.get(name, 0)
    ops = OpsServer(name, config.metrics.host, port).start()
    blobs = open_blob_store(config.blob_store)
    blobs.ensure()
    return ServiceContext(
        name=name,
        config=config,
        topology=Topology.from_config(config),
        blobs=blobs,
        ops=ops,
        stopping=threading.Event(),
    )


def wait_for_signal(stopping: threading.Event) -> None:
    """Block the main thread until SIGTERM or SIGINT (or `stopping` is set elsewhere)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    while not stopping.wait(0.5):
        pass
