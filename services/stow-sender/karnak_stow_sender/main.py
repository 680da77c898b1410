"""Entry point of the stow-sender: the service on the runtime."""

from __future__ import annotations

from karnak_shared.config import GatewayConfig
from karnak_shared.service.live_config import run_live
from karnak_stow_sender.sender import StowSenderService
from karnak_stow_sender.settings import load_settings


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the stow-sender until SIGTERM/SIGINT, following the configuration's revisions."""
    load_settings(config)  # a bad setting stops the start-up before anything connects
    run_live(StowSenderService(), config, metrics_port)
