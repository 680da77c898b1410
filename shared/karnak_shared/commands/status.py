"""`karnak status`: one line per running service instance (service, host, pid, revision, ready, last seen).

It binds a queue of its own to `<prefix>.status`, asks every instance for a report at once
(`request.status`), and listens for `--wait` seconds; the instances' periodic reports (every 10 s) come
in too. Exit code 1 when no instance answered.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from karnak_shared.errors import ConfigError, EnvelopeError

EXIT_NONE_ANSWERED = 1
EXIT_CONFIG = 2


def register(subparsers: Any) -> None:
    """Add `karnak status` to the `karnak` command line."""
    parser = subparsers.add_parser("status", help="show every running service instance and its revision")
    parser.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument(
        "--wait", type=float, default=3.0, help="seconds to listen for reports (default 3; instances answer at once)"
    )
    parser.set_defaults(func=cmd_status)


def collect_reports(url: str, prefix: str, wait: float) -> list[Any] | None:
    """The latest report of each instance that answered within `wait` seconds, by service, host and pid.

    None when RabbitMQ could not be reached within 10 s.
    """
    from karnak_shared.broker import Broadcast, ControlConnection
    from karnak_shared.service.status import REPORT_ROUTING_PREFIX, REQUEST_ROUTING_KEY, StatusReport

    exchange = f"{prefix}.status"
    latest: dict[str, StatusReport] = {}
    lock = threading.Lock()
    connected = threading.Event()

    def take(_exchange: str, body: bytes) -> None:
        try:
            report = StatusReport.from_body(body)
        except EnvelopeError:
            return  # the request itself, or a stranger's message
        with lock:
            known = latest.get(report.instance_id)
            if known is None or known.sent_at <= report.sent_at:
                latest[report.instance_id] = report

    control: ControlConnection

    def ask() -> None:
        connected.set()
        control.send(exchange, REQUEST_ROUTING_KEY, b"{}")

    control = ControlConnection(
        url,
        [Broadcast(exchange, "topic", f"{REPORT_ROUTING_PREFIX}#")],
        take,
        name="karnak-status",
        on_connected=ask,
    ).start()
    try:
        if not connected.wait(timeout=10):
            return None
        time.sleep(wait)
    finally:
        control.stop()
    with lock:
        return sorted(latest.values(), key=lambda r: (r.service, r.host, r.pid, r.instance_id))


def _seen(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds >= 1 else "now"


def cmd_status(args: argparse.Namespace) -> int:
    from karnak_shared.config import read_config_file
    from karnak_shared.logs import redact_url

    try:
        # Only the broker settings are needed: the file may hold no routing (database mode).
        config = read_config_file(args.config).settings
    except ConfigError as exc:
        print(f"karnak: invalid configuration:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    url = config.broker.url.get_secret_value()
    reports = collect_reports(url, config.broker.prefix, args.wait)
    if reports is None:
        print(f"karnak: cannot reach RabbitMQ at {redact_url(url)}", file=sys.stderr)
        return EXIT_NONE_ANSWERED
    now = time.time()
    if args.json:
        print(
            json.dumps(
                [{**r.model_dump(), "last_seen_seconds": round(max(0.0, now - r.sent_at), 1)} for r in reports],
                indent=2,
            )
        )
    elif reports:
        rows = [("SERVICE", "HOST", "PID", "REVISION", "READY", "LAST SEEN", "LAST ERROR")]
        for r in reports:
            rows.append(
                (
                    r.service,
                    r.host,
                    str(r.pid),
                    "-" if r.revision is None else str(r.revision),
                    "yes" if r.ready else ("no (broker down)" if not r.broker_connected else "no"),
                    _seen(max(0.0, now - r.sent_at)),
                    r.last_error or "",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if not reports:
        print(
            f"karnak: no service instance answered within {args.wait:g} s on {redact_url(url)} "
            f"(prefix {config.broker.prefix}); is the gateway running?",
            file=sys.stderr,
        )
        return EXIT_NONE_ANSWERED
    return 0
