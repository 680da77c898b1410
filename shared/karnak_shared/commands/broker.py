"""`karnak broker setup` and `karnak broker users`: the topology and the per-service users on RabbitMQ.

`setup` runs with an administrator's credentials (the configuration's broker.url): it declares the
topology and, with `--users DIR`, creates or updates one user per service (and the console's and the
operator's) through RabbitMQ's management HTTP API, each with the password in DIR/karnak-<name> and the
permissions of `karnak_shared.broker_users`. It is what docker compose's `broker-setup` service and the
Kubernetes Job `karnak-broker-setup` run before any service starts.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from karnak_shared.broker_users import ALL_USERS, permissions, username
from karnak_shared.config import load_config
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.safe_text import emit

EXIT_OK, EXIT_CONFIG, EXIT_RUNTIME = 0, 2, 1
MANAGEMENT_PORT = 15672


class ManagementRefused(KarnakError):
    """RabbitMQ's management API refused (or could not be reached for) a user or its permissions."""


class ManagementApi:
    """The two calls of RabbitMQ's management HTTP API that create a user with its permissions."""

    def __init__(self, base_url: str, user: str, password: str, timeout: float = 15.0) -> None:
        self._base = base_url.rstrip("/")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self._timeout = timeout

    def _put(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{self._base}/api/{path}",
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Authorization": self._authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout):
                pass
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace")
            raise ManagementRefused(f"PUT /api/{path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementRefused(f"cannot reach the management API at {self._base}: {reason}") from None

    def put_user(self, name: str, password: str) -> None:
        """Create the user, or set its password (no tags: it may not use the management UI)."""
        self._put(f"users/{urllib.parse.quote(name, safe='')}", {"password": password, "tags": ""})

    def put_permissions(self, vhost: str, name: str, configure: str, write: str, read: str) -> None:
        path = f"permissions/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}"
        self._put(path, {"configure": configure, "write": write, "read": read})


def management_url_of(amqp_url: str) -> str:
    """The management API beside an AMQP URL: same host, port 15672 (https for amqps)."""
    parts = urllib.parse.urlsplit(amqp_url)
    scheme = "https" if parts.scheme == "amqps" else "http"
    host = parts.hostname or "localhost"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{MANAGEMENT_PORT}"


def read_passwords(directory: Path) -> dict[str, str]:
    """Every user's password from DIRECTORY/karnak-<name>; every file must be there and not empty."""
    passwords: dict[str, str] = {}
    missing: list[str] = []
    for user in ALL_USERS:
        path = directory / username(user)
        try:
            password = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError:
            password = ""
        if not password:
            missing.append(str(path))
        passwords[user] = password
    if missing:
        raise ConfigError(f"no password for these broker users (one file each, not empty): {', '.join(missing)}")
    return passwords


def create_users(api: ManagementApi, vhost: str, prefix: str, passwords: dict[str, str]) -> list[str]:
    """Create or update every user with its permissions; the names created."""
    created = []
    for user in ALL_USERS:
        name = username(user)
        granted = permissions(user, prefix)
        api.put_user(name, passwords[user])
        api.put_permissions(vhost, name, granted.configure, granted.write, granted.read)
        created.append(name)
    return created


def _fail(message: str, code: int) -> int:
    for line in f"karnak: {message}".splitlines():
        emit(line, file=sys.stderr)
    return code


def cmd_setup(args: argparse.Namespace) -> int:
    """Declare every exchange, queue and binding with the configured (administrator's) credentials."""
    import pika.exceptions

    from karnak_shared.broker import open_connection
    from karnak_shared.logs import redact_url
    from karnak_shared.topology import Topology

    try:
        config = load_config(args.config)
        passwords = read_passwords(Path(args.users)) if args.users else None
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    url = config.broker.url.get_secret_value()
    topology = Topology.from_config(
        config.model_copy(update={"broker": config.broker.model_copy(update={"declare_topology": True})})
    )
    # The monitor's queue too: with per-service users the monitor may only check that it exists.
    topology = dataclasses.replace(topology, monitor=True)
    try:
        connection = open_connection(url, name="karnak-broker-setup")
        try:
            topology.declare(connection.channel())
        finally:
            connection.close()
    except (KarnakError, pika.exceptions.AMQPError) as exc:
        return _fail(f"cannot set up the topology at {redact_url(url)}: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
    counts = f"{len(topology.exchanges())} exchanges, {len(topology.all_queues())} queues"
    emit(f"topology {topology.prefix}: {counts} declared")
    if passwords is None:
        return EXIT_OK
    parts = urllib.parse.urlsplit(url)
    vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    api = ManagementApi(
        args.management_url or management_url_of(url),
        urllib.parse.unquote(parts.username or "guest"),
        urllib.parse.unquote(parts.password or "guest"),
    )
    try:
        created = create_users(api, vhost, topology.prefix, passwords)
    except ManagementRefused as exc:
        return _fail(f"cannot create the broker users: {exc}", EXIT_RUNTIME)
    emit(f"users on vhost {vhost}: {', '.join(created)}")
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    """Print the rabbitmqctl commands that create each service's user with its permissions."""
    vhost = args.vhost
    for user in ALL_USERS:
        granted = permissions(user, args.prefix)
        name = username(user)
        password = f'"$(cat {args.password_dir}/{name})"'
        emit(f"rabbitmqctl add_user {name} {password} || rabbitmqctl change_password {name} {password}")
        emit(f"rabbitmqctl set_permissions -p {vhost} {name} '{granted.configure}' '{granted.write}' '{granted.read}'")
    return EXIT_OK


def register(subparsers: Any) -> None:
    broker = subparsers.add_parser("broker", help="RabbitMQ: declare the topology, per-service users")
    sub = broker.add_subparsers(dest="action", required=True)
    setup = sub.add_parser(
        "setup", help="declare every exchange and queue, and create the users (with an administrator's credentials)"
    )
    setup.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    setup.add_argument(
        "--users",
        metavar="DIR",
        help="create or update one user per service with the password in DIR/karnak-<service> (management API)",
    )
    setup.add_argument("--management-url", help="RabbitMQ's management API (default: the broker's host, port 15672)")
    setup.set_defaults(func=cmd_setup)
    users = sub.add_parser("users", help="print the rabbitmqctl commands creating one user per service")
    users.add_argument("--prefix", default="karnak", help="the configuration's broker.prefix")
    users.add_argument("--vhost", default="/")
    users.add_argument("--password-dir", default="/run/secrets", help="one file per user, named karnak-<service>")
    users.set_defaults(func=cmd_users)
