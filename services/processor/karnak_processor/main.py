"""Entry point of the processor: the service on the runtime."""

from __future__ import annotations

from karnak_processor.processor import ProcessorService
from karnak_shared.config import GatewayConfig
from karnak_shared.service.live_config import run_live


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the processor until SIGTERM/SIGINT, following the configuration's revisions."""
    run_live(ProcessorService(), config, metrics_port)
