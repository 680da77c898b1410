"""Entry point of the dicom-sender: the service on the runtime."""

from __future__ import annotations

from karnak_dicom_sender.sender import DicomSenderService
from karnak_shared.config import GatewayConfig
from karnak_shared.service.live_config import run_live


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the dicom-sender until SIGTERM/SIGINT, following the configuration's revisions."""
    run_live(DicomSenderService(), config, metrics_port)
