"""`karnak queues`: every queue of the gateway with its messages and consumers, removed destinations included.

A destination removed from the configuration stops being consumed, but its queue and the messages in it
are kept until an operator deletes the queue (DESIGN.md section 14). The destinations come from every
stored revision, so such a queue is listed, marked with the revision that removed it; re-adding the
destination delivers its backlog.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from karnak_shared.errors import ConfigError, KarnakError

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def register(subparsers: Any) -> None:
    """Add `karnak queues` to the `karnak` command line."""
    parser = subparsers.add_parser(
        "queues", help="list the gateway's queues with their messages (removed destinations' included)"
    )
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.add_argument("--json", action="store_true", help="as JSON")
    parser.set_defaults(func=cmd_queues)


@dataclass(frozen=True)
class QueueLine:
    """One queue as listed: what it is for and how it stands."""

    queue: str
    messages: int
    consumers: int
    destination: str  # "" for the gateway's own queues
    state: str  # "configured", "removed in revision N", or "" for the gateway's own queues


def queue_lines(config_path: str | None) -> list[QueueLine]:
    """The queues of the current revision, then those of destinations that earlier revisions had."""
    from karnak_shared.broker import inspect_queues
    from karnak_shared.revisions import RevisionStore
    from karnak_shared.topology import Topology

    store = RevisionStore.open(config_path)
    try:
        current = store.check()
        config = store.gateway_config(current)
        topology = Topology.from_config(config)
        destinations = {topology.send_queue(d.queue_kind, d.id): d.id for _, d in config.destinations()}
        removed: dict[str, tuple[str, int]] = {}
        # Newest first: a queue's removal is the revision after the newest one that still had it.
        later = current.number
        for revision in store.history():
            if revision.number != current.number:
                try:
                    earlier = store.gateway_config(revision)
                except ConfigError:
                    continue  # a revision no longer valid here (a secret's reference gone): its queues unknown
                for _, dest in earlier.destinations():
                    name = topology.send_queue(dest.queue_kind, dest.id)
                    if name not in destinations and name not in removed:
                        removed[name] = (dest.id, later)
            later = revision.number
    finally:
        store.close()
    own = [name for name in topology.all_queues() if name not in destinations]
    names = [*own, *destinations, *removed]
    states = inspect_queues(config.broker.url.get_secret_value(), names)
    lines = []
    for name in names:
        state = states[name]
        if state is None:
            continue  # never declared (a destination removed before anything was routed to it) or deleted
        if name in destinations:
            destination, how = destinations[name], "configured"
        elif name in removed:
            destination, how = removed[name][0], f"removed in revision {removed[name][1]}: not consumed, kept"
        else:
            destination, how = "", ""
        lines.append(QueueLine(name, state.messages, state.consumers, destination, how))
    return lines


def cmd_queues(args: argparse.Namespace) -> int:
    try:
        lines = queue_lines(args.config)
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KarnakError as exc:
        print(f"karnak: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.json:
        print(json.dumps([asdict(line) for line in lines], indent=2))
        return 0
    rows = [("QUEUE", "MESSAGES", "CONSUMERS", "DESTINATION", "STATE")]
    rows += [(q.queue, str(q.messages), str(q.consumers), q.destination or "-", q.state) for q in lines]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])
    return 0
