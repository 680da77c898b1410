"""`karnak run console`: the console's web server (uvicorn), its status listener, the first admin account."""

from __future__ import annotations

from karnak_console.accounts import FIRST_ADMIN, default_password_file, write_owner_only
from karnak_console.app import create_app
from karnak_console.context import Console
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import ConfigError
from karnak_shared.logs import EventLogger, configure_logging
from karnak_shared.revisions import RevisionStore

log = EventLogger("karnak.console")


def open_store(config: GatewayConfig) -> RevisionStore:
    """The revision store of the configuration file, bootstrapped from its routing keys when empty."""
    store = RevisionStore.open(config.source_path)
    try:
        store.check()
    except ConfigError:
        if store.latest() is not None:
            raise
        # No routing configuration anywhere yet: the console is where the first forward node is made.
        log.info("console.no-routing-configuration")
    return store


def announce_first_admin(console: Console) -> None:
    """With no account yet, create `admin` and say its password once (stdout, and an owner-only file)."""
    password = console.accounts.ensure_first_admin()
    if password is None:
        return
    chosen = console.settings.console.admin_password_file
    from pathlib import Path

    path = Path(chosen) if chosen else default_password_file()
    write_owner_only(path, password + "\n")
    print(
        f"karnak console: first start: created the account {FIRST_ADMIN!r} with the password {password} "
        f"(also in {path}, readable by its owner only; `karnak users passwd {FIRST_ADMIN}` changes it)",
        flush=True,
    )


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Serve the console until SIGTERM/SIGINT (uvicorn handles both)."""
    import uvicorn

    configure_logging("console", config.logging.level, config.logging.format)
    store = open_store(config)
    console = Console.build(store)
    announce_first_admin(console)
    if console.status is not None:
        console.status.start()
    app = create_app(console)
    settings = config.console
    # The console's ops endpoints are on its own port: a --metrics-port (compose, Kubernetes) is that port.
    port = metrics_port or settings.port
    log.info("console.listening", host=settings.host, port=port)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=port,
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=True,
        )
    finally:
        if console.status is not None:
            console.status.stop()
        store.close()
