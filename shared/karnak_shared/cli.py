"""The `karnak` command: run a service, run every service locally, tend the dead queue; command groups in `commands/`.

Services are found through the ``karnak.services`` entry points that each service package declares, so
this module knows no service by name.

Exit codes: 0 ok, 1 failure, 2 bad input (configuration or usage), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from karnak_shared.commands import blobs as blobs_command
from karnak_shared.commands import broker as broker_commands
from karnak_shared.commands import config as config_commands
from karnak_shared.commands import queues as queues_command
from karnak_shared.commands import status as status_command
from karnak_shared.config import GatewayConfig, load_config
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.progress import Progress, StopRequest
from karnak_shared.safe_text import emit

EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


def service_names() -> list[str]:
    """The names of the installed services (``karnak.services`` entry points), without importing them."""
    return sorted(ep.name for ep in entry_points(group="karnak.services"))


def services() -> dict[str, Callable[..., None]]:
    """The installed services, by name, from the ``karnak.services`` entry points."""
    return {ep.name: ep.load() for ep in entry_points(group="karnak.services")}


def load_service(name: str) -> Callable[..., None] | None:
    """One service's entry point, imported alone: a service process registers only its own metrics."""
    found = [ep for ep in entry_points(group="karnak.services") if ep.name == name]
    return found[0].load() if found else None


def _fail(message: str, code: int) -> int:
    # A configuration error lists one problem a line: each line is escaped on its own.
    for line in f"karnak: {message}".splitlines():
        emit(line, file=sys.stderr)
    return code


# --- karnak run --------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    service = load_service(args.service)
    if service is None:
        return _fail(f"unknown service {args.service!r}; installed: {', '.join(service_names())}", EXIT_CONFIG)
    from karnak_shared.service.live_config import starting_config

    try:
        # Without the migrations (Alembic weighs ~10 MB in every idle service) unless the schema is missing.
        config, _ = starting_config(args.config, upgrade=False)
        service(config, metrics_port=args.metrics_port)
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    except KarnakError as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    return 0


# --- karnak up --------------------------------------------------------------------------------------


@dataclass
class _Child:
    service: str
    replica: int
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    ready: bool = False
    last_error: str = ""
    output: threading.Thread | None = None

    @property
    def label(self) -> str:
        return self.service if self.replica == 0 else f"{self.service}#{self.replica}"


SCALABLE = ("processor", "dicom-sender", "stow-sender")
READY_WAIT = 60.0


def _plan(config: GatewayConfig, names: Sequence[str], replicas: int) -> list[_Child]:
    from karnak_shared.preflight import free_port

    children = []
    for name in names:
        # The console serves its pages, API and ops endpoints on one port: console.port unless metrics says.
        base = config.metrics.ports.get(name, 0) or (config.console.port if name == "console" else 0)
        count = replicas if name in SCALABLE else 1
        for replica in range(count):
            # A service the configuration gives no ops port still gets one, so `up` can ask it whether it is ready.
            port = base + 10 * replica if base else free_port(config.metrics.host)
            children.append(_Child(name, replica, port))
    return children


def _preflight(args: argparse.Namespace, names: Sequence[str]) -> tuple[GatewayConfig | None, list[_Child], list[str]]:
    """Every check `up` makes before it starts anything, and the processes it would start."""
    from karnak_shared import preflight

    config, problems = preflight.check_configuration(args.config, names)
    if config is None:
        return None, [], [p.line() for p in problems]
    problems += preflight.check_broker(config.broker.url.get_secret_value())
    problems += preflight.check_database(config.database.url.get_secret_value())
    children = _plan(config, names, args.replicas)
    ports = [preflight.Port(f"{c.label} ops endpoint", config.metrics.host, c.metrics_port) for c in children]
    if "receiver" in names:
        ports.append(preflight.Port("DICOM listener", config.listener.host, config.listener.port))
    problems += preflight.check_ports(ports)
    return config, children, [p.line() for p in problems]


def _forward_output(child: _Child) -> None:
    """Copy a child's log lines to our stderr, remembering its last error line for when it exits."""
    assert child.process is not None and child.process.stderr is not None
    for raw in child.process.stderr:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        lowered = line.lower()
        if "level=error" in lowered or '"level": "error"' in lowered or lowered.startswith("karnak:"):
            child.last_error = line


def _is_ready(host: str, port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{_display_host(host)}:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def cmd_up(args: argparse.Namespace) -> int:
    names = service_names()
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            return _fail(f"unknown service(s): {', '.join(sorted(unknown))}", EXIT_CONFIG)
        names = [n for n in names if n in args.only]
    config, children, problems = _preflight(args, names)
    if problems or config is None:
        for problem in problems:
            emit(f"karnak up: {problem}", file=sys.stderr)
        emit(f"karnak up: {len(problems)} problem(s); nothing was started", file=sys.stderr)
        return EXIT_CONFIG
    config_path = os.path.abspath(args.config or os.environ.get("KARNAK_CONFIG", ""))
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def spawn(child: _Child) -> None:
        command = [sys.executable, "-m", "karnak_shared.cli", "run", child.service, "--config", config_path]
        command += ["--metrics-port", str(child.metrics_port)]
        child.ready, child.last_error = False, ""
        child.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        child.output = threading.Thread(target=_forward_output, args=(child,), daemon=True)
        child.output.start()

    for child in children:
        spawn(child)
        pid = child.process.pid if child.process else "?"
        if child.service == "console":
            where = f"http://{_display_host(config.console.host)}:{child.metrics_port}/"
            emit(f"karnak up: starting console (pid {pid}): pages {where}, API {where}api/v1, metrics {where}metrics")
            continue
        where = f"http://{_display_host(config.metrics.host)}:{child.metrics_port}/metrics"
        emit(f"karnak up: starting {child.label} (pid {pid}), metrics {where}")
    sys.stdout.flush()
    exit_code = 0
    started = time.monotonic()
    announced_ready = waiting_said = False
    while not stopping:
        time.sleep(0.2)
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                if not child.ready and _is_ready(config.metrics.host, child.metrics_port):
                    child.ready = True
                continue
            if child.output is not None:
                child.output.join(timeout=2)  # its last lines, error included, are read before we name it
            reason = f": {child.last_error}" if child.last_error else ""
            if code == EXIT_CONFIG or not announced_ready:
                emit(f"karnak up: {child.label} exited with {code}{reason}; stopping", file=sys.stderr, flush=True)
                stopping, exit_code = True, EXIT_CONFIG if code == EXIT_CONFIG else EXIT_RUNTIME
                break
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 60] + [now]
            if len(child.restarts) > 5:
                emit(
                    f"karnak up: {child.label} keeps failing (exit {code}){reason}; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                stopping, exit_code = True, EXIT_RUNTIME
                break
            emit(f"karnak up: {child.label} exited with {code}{reason}; restarting", file=sys.stderr, flush=True)
            spawn(child)
        if stopping:
            break
        if not announced_ready and all(c.ready for c in children):
            announced_ready = True
            emit(
                f"karnak up: ready ({len(children)} service process(es)); DICOM listener on "
                f"{config.listener.host}:{config.listener.port}; Ctrl-C stops everything",
                flush=True,
            )
        elif not announced_ready and not waiting_said and time.monotonic() - started > READY_WAIT:
            waiting_said = True
            late = ", ".join(c.label for c in children if not c.ready)
            emit(f"karnak up: still waiting for {late} to be ready (see their /readyz)", file=sys.stderr, flush=True)
    _terminate(children)
    emit("karnak up: stopped", flush=True)
    return exit_code


def _display_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host


def _terminate(children: list[_Child], timeout: float = 30.0) -> None:
    running = [c.process for c in children if c.process is not None and c.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- karnak dead list / replay ---------------------------------------------------------------------


def cmd_dead(args: argparse.Namespace) -> int:
    from karnak_shared.deadletters import DeadLetterQueue

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    try:
        dead = DeadLetterQueue.connect(config)
        try:
            if args.action == "list":
                entries = dead.list(limit=args.limit)
                if args.json:
                    print(json.dumps([e.as_dict() for e in entries], indent=2))
                else:
                    emit(f"{len(entries)} parked message(s) in {dead.queue}")
                    for e in entries:
                        # Values come from messages: a crafted one could fake lines if printed raw.
                        emit(
                            f"- instance {e.instance_id} destination={e.destination} sop_instance={e.sop_instance_uid} "
                            f"parked_at={e.parked_at} origin={e.origin_routing_key}"
                        )
                        emit(f"  cause: {e.cause}  reason: {e.reason}")
                return 0
            if not (args.all or args.instance_id or args.destination):
                return _fail("replay needs --all, --instance-id ID or --destination ID", EXIT_CONFIG)
            progress = Progress("karnak dead replay", unit="message", every=args.progress_every)
            stop = StopRequest()
            with stop.installed():
                replayed = dead.replay(
                    instance_ids=set(args.instance_id or ()),
                    destination=args.destination,
                    everything=args.all,
                    on_total=progress.set_total,
                    on_replayed=progress.advance,
                    should_stop=lambda: bool(stop),
                )
            progress.close(interrupted=bool(stop))
            emit(f"replayed {replayed} message(s)")
            return EXIT_INTERRUPTED if stop else 0
        finally:
            dead.close()
    except KarnakError as exc:
        return _fail(str(exc), EXIT_RUNTIME)


# --- karnak db upgrade ------------------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from karnak_shared.database import create_database_engine, upgrade_schema
    from karnak_shared.logs import redact_url

    try:
        config = load_config(args.config)
        url = config.database.url.get_secret_value()
        upgrade_schema(create_database_engine(url))
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    except Exception as exc:  # noqa: BLE001 - driver errors: name the database, never its password
        return _fail(f"cannot migrate the database at {redact_url(url)}: {type(exc).__name__}: {exc}", EXIT_RUNTIME)
    emit(f"database at {redact_url(url)} is at the latest schema")
    return 0


# --- karnak headers basic|bearer -------------------------------------------------------------------


def cmd_headers(args: argparse.Namespace) -> int:
    """Print an Authorization header in Karnak's form; the secret is read from stdin, never from argv."""
    from karnak_shared.headers import AUTHORIZATION, HeaderError, basic_authorization, bearer_authorization, karnak_form

    what = "password" if args.kind == "basic" else "token"
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(f"{what}: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        return _fail(f"no {what} on standard input", EXIT_CONFIG)
    try:
        value = basic_authorization(args.user, secret) if args.kind == "basic" else bearer_authorization(secret)
        for line in karnak_form({AUTHORIZATION: value}).splitlines():
            emit(line)
    except HeaderError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    return 0


# --- karnak pseudonyms import|export ---------------------------------------------------------------


def cmd_pseudonyms(args: argparse.Namespace) -> int:
    from karnak_shared.database import open_database
    from karnak_shared.pseudonym_store import export_csv, export_json, import_csv

    try:
        config = load_config(args.config)
        if args.project not in {p.name for p in config.projects}:
            raise ConfigError(f"no project named {args.project!r} in projects")
        sessions = open_database(config.database.url.get_secret_value())
        if args.action == "import":
            progress = Progress("karnak pseudonyms import", unit="row", every=args.progress_every)
            try:
                count = import_csv(
                    sessions, args.project, args.file, on_total=progress.set_total, on_stored=progress.advance
                )
            except KeyboardInterrupt:
                # One transaction: an interrupted import leaves the cache as it was, never half-imported.
                progress.close()
                return _fail("import interrupted; the cache is unchanged (an import is all or nothing)", 130)
            progress.close()
            emit(f"imported {count} pseudonym(s) into project {args.project}")
        else:
            out = sys.stdout if args.file == "-" else args.file
            count = export_json(sessions, args.project, out) if args.json else export_csv(sessions, args.project, out)
            emit(f"exported {count} pseudonym(s) of project {args.project}", file=sys.stderr)
    except ConfigError as exc:
        return _fail(f"invalid configuration:\n{exc}", EXIT_CONFIG)
    except KarnakError as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    return 0


# --- argument parsing -----------------------------------------------------------------------------


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The `karnak` command line; `plugins=False` leaves out the commands of installed services."""
    parser = argparse.ArgumentParser(
        prog="karnak",
        description="Karnak DICOM gateway (Python edition)",
        epilog="exit codes: 0 ok, 1 failure, 2 bad input (configuration or usage), 130 interrupted (Ctrl-C)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one service in the foreground")
    run.add_argument("service", help="receiver, processor, dicom-sender, ...")
    run.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ["KARNAK_METRICS_PORT"]) if os.environ.get("KARNAK_METRICS_PORT") else None,
        help="port of /metrics, /healthz, /readyz (default: $KARNAK_METRICS_PORT, else the configuration's)",
    )
    run.set_defaults(func=cmd_run)

    config_commands.register(sub)

    up = sub.add_parser("up", help="run every service as a local process (for machines without Docker)")
    up.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    up.add_argument("--replicas", type=int, default=1, help="processes per scalable service (processor, senders)")
    up.add_argument("--only", nargs="+", help="run only these services")
    up.set_defaults(func=cmd_up)

    db = sub.add_parser("db", help="database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    upgrade.set_defaults(func=cmd_db_upgrade)

    headers = sub.add_parser("headers", help="print an Authorization header for a stow destination (Karnak form)")
    headers_sub = headers.add_subparsers(dest="kind", required=True)
    basic = headers_sub.add_parser("basic", help="Basic authorization; the password is read from stdin")
    basic.add_argument("user")
    basic.set_defaults(func=cmd_headers)
    bearer = headers_sub.add_parser("bearer", help="Bearer authorization; the token is read from stdin")
    bearer.set_defaults(func=cmd_headers)

    pseudonyms = sub.add_parser("pseudonyms", help="import or export a project's pseudonym cache (CSV)")
    pseudonyms.add_argument("action", choices=["import", "export"])
    pseudonyms.add_argument("file", help="CSV file (export: '-' for standard output)")
    pseudonyms.add_argument("--project", required=True)
    pseudonyms.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    pseudonyms.add_argument("--json", action="store_true", help="export as JSON (one object per patient)")
    pseudonyms.add_argument("--progress-every", type=int, default=1000, help="rows per progress line off a terminal")
    pseudonyms.set_defaults(func=cmd_pseudonyms)

    # Commands of installed services (e.g. the processor's `deid`), found like the services themselves.
    for command in entry_points(group="karnak.commands") if plugins else ():
        command.load()(sub)

    status_command.register(sub)
    queues_command.register(sub)
    blobs_command.register(sub)
    dead = sub.add_parser("dead", help="show or replay messages parked in the dead-letter queue")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("--config", help="configuration file (default: $KARNAK_CONFIG)")
    dead.add_argument("--limit", type=int, default=1000, help="list at most this many")
    dead.add_argument("--json", action="store_true", help="list as JSON")
    dead.add_argument("--all", action="store_true", help="replay every parked message")
    dead.add_argument("--instance-id", action="append", help="replay this instance id (repeatable)")
    dead.add_argument("--destination", help="replay the messages of this destination")
    dead.add_argument("--progress-every", type=int, default=100, help="messages per progress line off a terminal")
    dead.set_defaults(func=cmd_dead)
    broker_commands.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A service process (`karnak run X`) needs no other command, and loading the plugins' modules (the
    # processor's `deid` imports pydicom, numpy and the codecs) made every idle service ~45 MB larger.
    args = build_parser(plugins=argv[:1] != ["run"]).parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
