"""The receiver on the service runtime: the DICOM listener is its entrypoint, the intake its publishing side."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

from karnak_receiver.intake import Intake
from karnak_receiver.listener import Listener, tls_context
from karnak_shared.config import GatewayConfig
from karnak_shared.service import Providers, Service, ServiceRunner
from karnak_shared.service.live_config import run_live


@dataclass(frozen=True)
class ReceiverState:
    """The configuration the listener serves, with its TLS context (checked before anything starts)."""

    config: GatewayConfig
    ssl_context: ssl.SSLContext | None


class ReceiverService(Service[ReceiverState]):
    """Takes C-STOREs in and puts them on the `received` queue (Success only after the confirm)."""

    name = "receiver"

    def __init__(self) -> None:
        self.listener: Listener | None = None

    def configure(self, config: GatewayConfig, providers: Providers) -> ReceiverState:
        # Certificate files are checked here: a bad one is a configuration error.
        return ReceiverState(config, tls_context(config.listener))

    def start(self, runner: ServiceRunner[ReceiverState]) -> None:
        state, providers = runner.state, runner.providers
        intake = Intake(providers.publisher, runner.topology, providers.blobs, state.config.blob_store.max_inline_bytes)
        # Each association is admitted by the forward nodes of the revision running when it opens.
        self.listener = Listener(state.config, intake, state.ssl_context, routing=lambda: runner.state.config).start()

    def stop(self) -> None:
        # Stop taking associations first, so no C-STORE is answered after the publisher is gone.
        if self.listener is not None:
            self.listener.stop()

    def readiness(self) -> dict[str, Callable[[], bool]]:
        return {"listener": lambda: self.listener is not None and self.listener.serving}


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the receiver until SIGTERM/SIGINT, following the configuration's revisions."""
    run_live(ReceiverService(), config, metrics_port)
