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
from karnak_processor.routing import Deliver, Fail, Later, Reject, Route, Router, Skip
from karnak_shared.config import GatewayConfig, load_config
from karnak_shared.database import open_database
from karnak_shared.errors import ConfigError, InvalidInstance
from karnak_shared.progress import Progress, StopRequest


def register(subparsers: Any) -> None:
    """Add the `deid` command to the `karnak` command line."""
    parser = subparsers.add_parser("deid", help="apply a destination's route to files, offline, to try a profile")
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.add_argument("--destination", required=True, help="id of the destination whose route to apply")
    parser.add_argument("inputs", nargs="+", type=Path, help="DICOM files or folders")
    parser.add_argument("--out", required=True, type=Path, help="folder for the copies that would be sent")
    parser.add_argument("--progress-every", type=int, default=100, help="files per progress line off a terminal")
    parser.set_defaults(func=run_deid)


def _files(inputs: list[Path]) -> Iterator[Path]:
    for item in inputs:
        if item.is_dir():
            yield from sorted(p for p in item.rglob("*") if p.is_file())
        else:
            yield item


def open_router(config: GatewayConfig) -> Router:
    """The processor's router for `config`, built as the processor builds it at start-up.

    Building it loads every profile and opens every pseudonym source, so a destination that cannot work
    raises `ConfigError` naming its field before anything is consumed.
    """
    needs_db = any(
        d.deidentification and d.deidentification.pseudonym.type == "cache" for _, d in config.destinations()
    )
    sessions = open_database(config.database.url.get_secret_value()) if needs_db else None
    return Router(config, base_dir=config.base_dir, session_factory=sessions)


def check_configuration(config: GatewayConfig) -> None:
    """The processor's start-up check, for `karnak up` to run before it starts anything."""
    open_router(config)


def run_deid(args: argparse.Namespace) -> int:
    """Run the command; exit status 0 when every file was sent or rejected, 1 when one failed, 130 interrupted."""
    try:
        config = load_config(args.config)
        found = next(((node, d) for node, d in config.destinations() if d.id == args.destination), None)
        if found is None:
            raise ConfigError(f"no destination with id {args.destination!r} in the configuration")
        node, destination = found
        route = open_router(config).route(node.ae_title, destination.id)
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    assert route is not None
    args.out.mkdir(parents=True, exist_ok=True)
    files = list(_files(args.inputs))
    counts = {"sent": 0, "rejected": 0, "failed": 0}
    progress = Progress("karnak deid", total=len(files), unit="file", every=args.progress_every)
    stop = StopRequest()
    with stop.installed():
        for path in files:
            if stop:
                break
            _apply(route, path, args.out, destination.id, counts)
            progress.advance()
    progress.close(interrupted=bool(stop))
    print(f"{counts['sent']} sent, {counts['rejected']} rejected, {counts['failed']} failed")
    if stop:
        return 130
    return 1 if counts["failed"] else 0


def _apply(route: Route, path: Path, out: Path, destination: str, counts: dict[str, int]) -> None:
    """Route one file and write what would be sent; one line of outcome per file."""
    try:
        decision = route.decide(read_instance(path.read_bytes()))
    except (InvalidInstance, OSError) as exc:
        print(f"failed   {path}: {exc}")
        counts["failed"] += 1
        return
    if isinstance(decision, Deliver):
        target = out / f"{decision.sop_instance_uid}.dcm"
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
        print(f"skipped  {path}: destination {destination} is disabled")
