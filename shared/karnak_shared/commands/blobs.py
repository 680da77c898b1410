"""`karnak blobs sweep`: remove the blobs no queued message names (left by a crash), for either store.

The rule and why it never takes a blob a message still needs: `karnak_shared.blob_sweep`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from karnak_shared.errors import ConfigError, KarnakError

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def register(subparsers: Any) -> None:
    """Add `karnak blobs sweep` to the `karnak` command line."""
    parser = subparsers.add_parser("blobs", help="blob store tools")
    sub = parser.add_subparsers(dest="blobs_command", required=True)
    sweep = sub.add_parser(
        "sweep",
        help="set aside the blobs no queued message names, and purge those set aside earlier (after a crash)",
        description="A blob is set aside when it is older than --older-than and no message in any of the "
        "gateway's queues names it; reading it brings it back. A blob set aside for --older-than that "
        "the queues still do not name is purged. Run it periodically (a CronJob), or after a crash.",
    )
    sweep.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    sweep.add_argument(
        "--older-than",
        default="1h",
        help="only blobs (and set-aside blobs) older than this: 30s, 10m, 1h, 2d (default 1h; 0 only with "
        "the gateway idle)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="say what would be set aside or purged; change nothing")
    sweep.add_argument("--json", action="store_true", help="the report as JSON")
    sweep.set_defaults(func=cmd_sweep)


def blob_queues(config_path: str | None) -> tuple[Any, list[str]]:
    """The configuration, and the queues whose messages may name blobs (removed destinations' included)."""
    from karnak_shared.commands.queues import queue_lines
    from karnak_shared.config import load_config
    from karnak_shared.topology import Topology

    config = load_config(config_path)
    topology = Topology.from_config(config)
    no_blobs = {topology.notifier_queue, topology.kheops_queue}  # events and share requests name none
    return config, [line.queue for line in queue_lines(config_path) if line.queue not in no_blobs]


def cmd_sweep(args: argparse.Namespace) -> int:
    from karnak_shared.blob_sweep import parse_duration, queued_blob_references, sweep
    from karnak_shared.blobstore import open_blob_store

    try:
        older_than = parse_duration(args.older_than)
    except ValueError as exc:
        print(f"karnak: --older-than: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config, queues = blob_queues(args.config)
        store = open_blob_store(config.blob_store)
        store.ensure()
        url = config.broker.url.get_secret_value()
        report = sweep(store, lambda: queued_blob_references(url, queues), older_than, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KarnakError as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps({"store": store.location, **report.as_dict()}, indent=2))
    else:
        print(f"{store.location}: {report.summary()}")
    return 0
