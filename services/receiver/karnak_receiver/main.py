"""Entry point of the receiver: wires configuration, the confirming publisher, the intake and the listener."""

from __future__ import annotations

from karnak_receiver.intake import Intake
from karnak_receiver.listener import Listener, tls_context
from karnak_shared.broker import Publisher
from karnak_shared.config import GatewayConfig
from karnak_shared.logs import EventLogger
from karnak_shared.ops import broker_state_recorder
from karnak_shared.runtime import prepare_service, wait_for_signal

log = EventLogger("karnak.receiver")


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the receiver until SIGTERM/SIGINT."""
    # Certificate files are checked before anything starts: a bad one is a configuration error.
    ssl_context = tls_context(config.listener)
    ctx = prepare_service("receiver", config, metrics_port)
    publisher = Publisher(
        ctx.broker_url,
        ctx.topology,
        heartbeat=config.broker.heartbeat,
        confirm_timeout=config.broker.confirm_timeout,
        name="karnak-receiver",
        on_state=broker_state_recorder("receiver", "publisher"),
    ).start()
    intake = Intake(publisher, ctx.topology, ctx.blobs, config.blob_store.max_inline_bytes)
    listener = Listener(config, intake, ssl_context).start()
    ctx.ops.add_check("broker", lambda: publisher.connected)
    ctx.ops.add_check("listener", lambda: listener.serving)
    try:
        wait_for_signal(ctx.stopping)
    finally:
        log.info("service.stopping")
        # Stop taking associations first, so no C-STORE is answered after the publisher is gone.
        listener.stop()
        publisher.stop()
        ctx.ops.stop()
