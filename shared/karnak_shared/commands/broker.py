"""`karnak broker setup` and `karnak broker users`: the topology and the per-service users on RabbitMQ."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from karnak_shared.broker_users import OPERATOR, SERVICE_USERS, permissions, username
from karnak_shared.config import load_config
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.safe_text import emit

EXIT_OK, EXIT_CONFIG, EXIT_RUNTIME = 0, 2, 1


def cmd_setup(args: argparse.Namespace) -> int:
    """Declare every exchange, queue and binding with the configured (operator's) credentials."""
    import pika.exceptions

    from karnak_shared.broker import open_connection
    from karnak_shared.logs import redact_url
    from karnak_shared.topology import Topology

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in f"karnak: invalid configuration:\n{exc}".splitlines():
            emit(line, file=sys.stderr)
        return EXIT_CONFIG
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
        emit(f"karnak: cannot set up the topology at {redact_url(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    counts = f"{len(topology.exchanges())} exchanges, {len(topology.all_queues())} queues"
    emit(f"topology {topology.prefix}: {counts} declared")
    return EXIT_OK


def cmd_users(args: argparse.Namespace) -> int:
    """Print the rabbitmqctl commands that create each service's user with its permissions."""
    vhost = args.vhost
    for user in (*SERVICE_USERS, OPERATOR):
        granted = permissions(user, args.prefix)
        name = username(user)
        password = f'"$(cat {args.password_dir}/{name})"'
        emit(f"rabbitmqctl add_user {name} {password} || rabbitmqctl change_password {name} {password}")
        emit(f"rabbitmqctl set_permissions -p {vhost} {name} '{granted.configure}' '{granted.write}' '{granted.read}'")
    return EXIT_OK


def register(subparsers: Any) -> None:
    broker = subparsers.add_parser("broker", help="RabbitMQ: declare the topology, per-service users")
    sub = broker.add_subparsers(dest="action", required=True)
    setup = sub.add_parser("setup", help="declare every exchange and queue (with the operator's credentials)")
    setup.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    setup.set_defaults(func=cmd_setup)
    users = sub.add_parser("users", help="print the rabbitmqctl commands creating one user per service")
    users.add_argument("--prefix", default="karnak", help="the configuration's broker.prefix")
    users.add_argument("--vhost", default="/")
    users.add_argument("--password-dir", default="/run/secrets", help="one file per user, named karnak-<service>")
    users.set_defaults(func=cmd_users)
