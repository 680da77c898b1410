"""`karnak deid`: the processor's exact per-destination code path, run offline on files.

A data manager tries a profile before turning it on: each input goes through the destination's route
(condition, authorized SOP classes, de-identification or tag morphing, transfer syntax) and what would be
sent is written to the output folder; rejections and failures are printed with their reasons.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from karnak_dicom.instance import read_instance
from karnak_processor.routing import Deliver, Fail, Later, Reject, Router, Skip
from karnak_shared.config import load_config
from karnak_shared.database import open_database
from karnak_shared.errors import ConfigError, InvalidInstance


def register(subparsers: Any) -> None:
    """Add the `deid` command to the `karnak` command line."""
    parser = subparsers.add_parser("deid", help="apply a destination's route to files, offline, to try a profile")
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.add_argument("--destination", required=True, help="id of the destination whose route to apply")
    parser.add_argument("inputs", nargs="+", type=Path, help="DICOM files or folders")
    parser.add_argument("--out", required=True, type=Path, help="folder for the copies that would be sent")
    parser.set_defaults(func=run_deid)


def _files(inputs: list[Path]) -> Iterator[Path]:
    for item in inputs:
        if item.is_dir():
            yield from sorted(p for p in item.rglob("*") if p.is_file())
        else:
            yield item


def run_deid(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 when every file was sent or rejected, 1 when one failed."""
    try:
        config = load_config(args.config)
        found = next(((node, d) for node, d in config.destinations() if d.id == args.destination), None)
        if found is None:
            raise ConfigError(f"no destination with id {args.destination!r} in the configuration")
        node, destination = found
        needs_db = destination.deidentification is not None and destination.deidentification.pseudonym.type == "cache"
        sessions = open_database(config.database.url.get_secret_value()) if needs_db else None
        route = Router(config, base_dir=config.base_dir, session_factory=sessions).route(node.ae_title, destination.id)
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    assert route is not None
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"sent": 0, "rejected": 0, "failed": 0}
    for path in _files(args.inputs):
        try:
            decision = route.decide(read_instance(path.read_bytes()))
        except (InvalidInstance, OSError) as exc:
            print(f"failed   {path}: {exc}")
            counts["failed"] += 1
            continue
        if isinstance(decision, Deliver):
            target = args.out / f"{decision.sop_instance_uid}.dcm"
            target.write_bytes(decision.part10)
            print(f"sent     {path} -> {target}")
            counts["sent"] += 1
        elif isinstance(decision, Reject):
            print(f"rejected {path}: {decision.reason}")
            counts["rejected"] += 1
        elif isinstance(decision, (Fail, Later)):
            print(f"failed   {path}: {decision.reason}")
            counts["failed"] += 1
        elif isinstance(decision, Skip):
            print(f"skipped  {path}: destination {destination.id} is disabled")
    print(f"{counts['sent']} sent, {counts['rejected']} rejected, {counts['failed']} failed")
    return 1 if counts["failed"] else 0
