"""`karnak monitoring purge --older-than DAYS`: delete monitoring rows by hand (the monitor does it hourly)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from karnak_monitor.retention import purge
from karnak_shared.config import load_config
from karnak_shared.database import open_database
from karnak_shared.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the `monitoring` command group to the `karnak` command line."""
    parser = subparsers.add_parser("monitoring", help="transfer monitoring tables")
    actions = parser.add_subparsers(dest="monitoring_command", required=True)
    purge_parser = actions.add_parser("purge", help="delete series last seen more than DAYS days ago")
    purge_parser.add_argument("--older-than", type=int, required=True, metavar="DAYS")
    purge_parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    purge_parser.set_defaults(func=run_purge)


def run_purge(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        print("karnak: --older-than must be 0 or more days", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    done = purge(open_database(config.database.url.get_secret_value()), dt.timedelta(days=args.older_than))
    print(f"purged {done.series} series row(s) last seen more than {args.older_than} day(s) ago")
    return 0
