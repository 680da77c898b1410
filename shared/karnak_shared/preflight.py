"""What `karnak up` checks before it starts anything, each problem as one line an operator can act on.

Starting six services on a configuration one of them refuses, or with RabbitMQ down, used to print
"started ..." for every service and then bury the reason in their logs. These checks run the same
configuration loading the services do (including each service's own start-up checks, declared as
``karnak.checks`` entry points, e.g. the processor loading every profile), then try the broker, the
database and every port the services will bind.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

from karnak_shared.config import GatewayConfig, load_config
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.logs import redact_url

BROKER_HINT = (
    "start it with `rabbitmq-server -detached` on this machine, or `docker compose up -d rabbitmq`, "
    "or set broker.url to a running one"
)
POSTGRES_HINT = (
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
    "or `docker compose up -d postgres`, or set database.url"
)


@dataclass(frozen=True)
class Problem:
    """One thing that would stop the gateway: what, where, and how to fix it, on one line."""

    what: str
    how: str = ""

    def line(self) -> str:
        return f"{self.what}; {self.how}" if self.how else self.what


@dataclass(frozen=True)
class Port:
    """A TCP port one of the services will listen on."""

    owner: str
    host: str
    port: int


def service_checks() -> dict[str, Callable[[GatewayConfig], None]]:
    """Each service's own start-up checks (``karnak.checks`` entry points); they raise `ConfigError`."""
    return {ep.name: ep.load() for ep in entry_points(group="karnak.checks")}


def check_configuration(path: str | None, services: Sequence[str]) -> tuple[GatewayConfig | None, list[Problem]]:
    """Load the configuration exactly as the services will, and run the checks of the services to start."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        where = path or "$KARNAK_CONFIG"
        return None, [Problem(f"configuration {where}: {line.strip()}") for line in str(exc).splitlines() if line]
    problems = []
    for name, check in sorted(service_checks().items()):
        if name not in services:
            continue
        try:
            check(config)
        except ConfigError as exc:
            problems += [Problem(f"{name} refuses the configuration: {line.strip()}") for line in str(exc).splitlines()]
        except KarnakError as exc:
            problems.append(Problem(f"{name} cannot start: {exc}"))
    return config, problems


def check_broker(url: str, timeout: float = 3.0) -> list[Problem]:
    """RabbitMQ answers at `url` (one connection attempt, closed at once)."""
    import pika
    import pika.exceptions

    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    try:
        pika.BlockingConnection(parameters).close()
    except pika.exceptions.ProbableAuthenticationError:
        return [Problem(f"RabbitMQ at {redact_url(url)} refused the user name or password", "check broker.url")]
    except pika.exceptions.AMQPError as exc:
        reason = str(exc) or type(exc).__name__
        return [Problem(f"RabbitMQ not reachable at {redact_url(url)} ({reason})", BROKER_HINT)]
    except OSError as exc:
        return [Problem(f"RabbitMQ not reachable at {redact_url(url)} ({exc.strerror or exc})", BROKER_HINT)]
    return []


def check_database(url: str, timeout: float = 3.0) -> list[Problem]:
    """The database at `url` accepts a connection (SQLite: its folder exists and is writable)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return [Problem(f"database.url {redact_url(url)} is not a database URL", "see config/karnak.example.yml")]
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            folder = Path(database).resolve().parent
            if not folder.is_dir():
                return [Problem(f"database folder {folder} does not exist", f"create it: mkdir -p {folder}")]
        return []
    from karnak_shared.database import create_database_engine

    try:
        # The services' own engine (psycopg 3 for a plain postgresql:// URL), with a short connect timeout.
        normalised = create_database_engine(url).url
        engine = create_engine(normalised, connect_args={"connect_timeout": int(timeout)})
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return [Problem(f"database not reachable at {redact_url(url)} ({first})", POSTGRES_HINT)]
    except ModuleNotFoundError as exc:
        return [Problem(f"no driver for database.url {redact_url(url)} ({exc.name} not installed)")]
    except ConfigError as exc:
        return [Problem(str(exc))]
    return []


def check_ports(ports: Sequence[Port]) -> list[Problem]:
    """Each port can be bound now (nothing else listens there)."""
    problems = []
    for item in ports:
        family = socket.AF_INET6 if ":" in item.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Without SO_REUSEADDR a port a stopped gateway left in TIME_WAIT would look taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((item.host, item.port))
            except OSError as exc:
                problems.append(
                    Problem(
                        f"port {item.port} on {item.host} for the {item.owner} is not free ({exc.strerror or exc})",
                        f"stop what listens there (`ss -ltnp 'sport = :{item.port}'`) or change the port",
                    )
                )
    return problems


def free_port(host: str) -> int:
    """A port the system has free now on `host`, for a service whose configuration leaves it open."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
