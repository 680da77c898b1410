"""`listen_config()`: every service instance follows the configuration revisions (DESIGN.md section 14).

Each instance has a queue of its own (exclusive, auto-delete) on the fanout exchange `<prefix>.config`,
where `karnak config apply` (and the console) announce `{"revision": N, "checksum": ...}`, and it also
checks the current revision every 30 s, so a missed announcement costs at most 30 s. A new revision is
built into a whole configuration and handed to the service's `apply(config, revision)`, which builds
everything new and swaps it in at once (or raises, changing nothing). A revision that validates but that
this instance cannot apply (a profile it cannot read, a pseudonym database it cannot open) leaves it on
its previous revision: one log line with the reason, `karnak_config_apply_failures_total{service}`, the
reason in its status reports, and another try at the next check.

The same thread sends the instance's status report every 10 s, and at once when `karnak status` asks.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter, Gauge

from karnak_shared.broker import Broadcast, ControlConnection
from karnak_shared.broker_users import check_service_access
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.logs import EventLogger
from karnak_shared.service.runner import Service, ServiceRunner
from karnak_shared.service.status import REQUEST_ROUTING_KEY, STATUS_INTERVAL_SECONDS, InstanceStatus

if TYPE_CHECKING:
    from karnak_shared.revisions import RevisionStore

log = EventLogger("karnak.config")

CHECK_INTERVAL_SECONDS = 30.0
MAX_REASON_LENGTH = 300

CONFIG_REVISION = Gauge("karnak_config_revision", "The configuration revision this service instance runs", ["service"])
APPLY_FAILURES = Counter(
    "karnak_config_apply_failures_total",
    "Revisions this instance could not apply (it stays on its previous one and tries again at the next check)",
    ["service"],
)


@dataclass(frozen=True)
class RevisionRef:
    """A revision's number and the checksum of its document."""

    number: int
    checksum: str


class RevisionSource(Protocol):
    """Where an instance reads revisions: the revision store (database mode) or the watched file."""

    def current(self) -> RevisionRef | None:
        """The revision the gateway should run, or None when there is none yet."""
        ...

    def config(self, number: int) -> GatewayConfig:
        """The whole configuration of revision `number`: this instance's settings with its routing."""
        ...


class StoreRevisions:
    """The revision store as a `RevisionSource`: in file mode, each check also takes a changed file."""

    def __init__(self, store: RevisionStore) -> None:
        self._store = store

    @classmethod
    def open(cls, config_path: str | os.PathLike[str] | None, *, upgrade: bool = True) -> StoreRevisions:
        """The store of a configuration file; `upgrade=False` once the schema is known to be current.

        A running service opens it without the migrations: `karnak run` (`starting_config`) brought the
        schema up to date, and Alembic with its templates would weigh on every idle service.
        """
        from karnak_shared.revisions import RevisionStore

        if upgrade:
            return cls(RevisionStore.open(config_path))
        from karnak_shared.config import read_config_file
        from karnak_shared.database import create_database_engine

        file = read_config_file(config_path)
        return cls(RevisionStore(create_database_engine(file.settings.database.url.get_secret_value()), file))

    def current(self) -> RevisionRef:
        revision = self._store.check()
        return RevisionRef(revision.number, revision.checksum)

    def config(self, number: int) -> GatewayConfig:
        return self._store.gateway_config(self._store.get(number))

    def close(self) -> None:
        self._store.close()


def starting_config(config_path: str | os.PathLike[str] | None, *, upgrade: bool = True) -> tuple[GatewayConfig, int]:
    """The configuration a service starts on and its revision: the current one (the file's routing
    becomes revision 1 when the database holds none; in file mode, a changed file a new revision).

    Raises `ConfigError` naming the problem (no routing anywhere, an invalid file or revision).
    `upgrade=False` skips the migrations unless the database turns out to lack the schema.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        revisions = StoreRevisions.open(config_path, upgrade=upgrade)
        try:
            current = revisions.current()
            return revisions.config(current.number), current.number
        finally:
            revisions.close()
    except ConfigError:
        raise
    except (SQLAlchemyError, KarnakError) as exc:
        if not upgrade:  # a database without the schema yet (no `karnak db upgrade`, no `karnak up`)
            return starting_config(config_path, upgrade=True)
        if isinstance(exc, KarnakError):
            raise
        # The driver's message may name the database with its password: only its kind is kept.
        raise KarnakError(f"cannot read the configuration revisions from the database: {type(exc).__name__}") from None


class ConfigRefused(KarnakError):
    """The service refused a configuration (the runner logged why, in one line)."""


def run_live(service: Service[Any], config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run a service on the runtime until SIGTERM/SIGINT, following the configuration's revisions.

    `config` is what `karnak run` loaded (`starting_config`); its file names the revision store.
    """
    revisions = StoreRevisions.open(config.source_path, upgrade=False)
    try:
        current = revisions.current()
        config = revisions.config(current.number)  # a revision stored since `karnak run` read one
        runner: ServiceRunner[Any] = ServiceRunner(service, config, metrics_port=metrics_port, revision=current.number)
        check_service_access(config.broker.url.get_secret_value(), service.topology(config))

        def apply(new: GatewayConfig, revision: int) -> None:
            if not runner.apply_config(new, revision):
                raise ConfigRefused(runner.refusal or "the service refused the configuration")

        runner.start()
        listener = ConfigListener(
            service.name,
            broker_url=config.broker.url.get_secret_value(),
            prefix=config.broker.prefix,
            revisions=revisions,
            apply=apply,
            status=InstanceStatus(service.name, revision=current.number),
            ready=lambda: runner.ops is not None and not runner.ops.failing_checks(),
            broker_connected=lambda: runner.connected,
            heartbeat=config.broker.heartbeat,
            declare_exchanges=config.broker.declare_topology,
        ).start()
        if runner.ops is not None:
            # Without it the instance hears of no revision: not ready, even with nothing else to do.
            runner.ops.add_check("control", lambda: listener.control.connected)
        try:
            runner.wait_for_signal()
        finally:
            listener.stop()
            runner.stop()
    finally:
        revisions.close()


def _reason(exc: BaseException) -> str:
    # The configuration's own errors name the field; others say what failed. Never more than one line.
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:MAX_REASON_LENGTH]


class ConfigListener:
    """Applies new revisions to one service instance and reports its status (a thread of its own)."""

    def __init__(
        self,
        service: str,
        *,
        broker_url: str,
        prefix: str,
        revisions: RevisionSource,
        apply: Callable[[GatewayConfig, int], None],
        status: InstanceStatus,
        ready: Callable[[], bool],
        broker_connected: Callable[[], bool],
        heartbeat: int = 30,
        declare_exchanges: bool = True,
        check_interval: float = CHECK_INTERVAL_SECONDS,
        report_interval: float = STATUS_INTERVAL_SECONDS,
    ) -> None:
        self.service = service
        self._revisions = revisions
        self._apply = apply
        self._status = status
        self._ready = ready
        self._broker_connected = broker_connected
        self._check_interval = check_interval
        self._report_interval = report_interval
        self._config_exchange = f"{prefix}.config"
        self._status_exchange = f"{prefix}.status"
        self._wake = threading.Event()
        self._check_due = threading.Event()
        self._report_due = threading.Event()
        self._stop = threading.Event()
        self._last_failure: tuple[int, str] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{service}-config", daemon=True)
        self.control = ControlConnection(
            broker_url,
            [
                Broadcast(self._config_exchange, "fanout"),
                Broadcast(self._status_exchange, "topic", REQUEST_ROUTING_KEY),
            ],
            self._on_message,
            heartbeat=heartbeat,
            name=f"karnak-{service}-control",
            on_connected=self._on_connected,
            declare_exchanges=declare_exchanges,
        )
        if status.revision is not None:
            CONFIG_REVISION.labels(service).set(status.revision)
        APPLY_FAILURES.labels(service)  # the series exists (at 0) before the first failure

    @property
    def revision(self) -> int | None:
        return self._status.revision

    def start(self) -> ConfigListener:
        self.control.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self.control.stop()

    def check_now(self) -> None:
        """Check the current revision soon (as an announcement does)."""
        self._check_due.set()
        self._wake.set()

    # --- the control connection's thread: only flags, the work is done in the listener's thread -----

    def _on_message(self, exchange: str, body: bytes) -> None:
        if exchange == self._status_exchange:
            self._report_due.set()
        else:
            try:
                announced = json.loads(body).get("revision")
            except (ValueError, AttributeError):
                announced = None
            log.debug("config.announced", revision=announced)
            self._check_due.set()
        self._wake.set()

    def _on_connected(self) -> None:
        # Announcements made while disconnected were missed: check at once; and say we are here.
        self._check_due.set()
        self._report_due.set()
        self._wake.set()

    # --- the listener's thread ------------------------------------------------------------------

    def _run(self) -> None:
        next_check = time.monotonic() + self._check_interval
        next_report = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.0, min(next_check, next_report) - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            if self._check_due.is_set() or now >= next_check:
                self._check_due.clear()
                self.check()
                next_check = time.monotonic() + self._check_interval
            if self._report_due.is_set() or now >= next_report:
                self._report_due.clear()
                self.report()
                next_report = time.monotonic() + self._report_interval

    def check(self) -> bool:
        """Apply the current revision if it is new; True when this instance runs the current revision."""
        try:
            current = self._revisions.current()
        except Exception as exc:  # noqa: BLE001 - the database may be down: keep the running revision, retry
            log.warning("config.check-failed", reason=_reason(exc), revision=self.revision)
            return False
        if current is None or current.number == self.revision:
            return True
        previous = self.revision
        started = time.perf_counter()
        try:
            config = self._revisions.config(current.number)
            self._apply(config, current.number)
        except ConfigRefused as exc:
            self._failed(current.number, _reason(exc), logged=True)
            return False
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the previous revision keeps running
            self._failed(current.number, _reason(exc), logged=False)
            return False
        self._status.applied(current.number)
        self._last_failure = None
        CONFIG_REVISION.labels(self.service).set(current.number)
        # The runner says `config.applied`; this line adds where it came from and how long it took.
        log.debug(
            "config.revision-applied",
            revision=current.number,
            previous=previous if previous is not None else "-",
            seconds=round(time.perf_counter() - started, 3),
        )
        self.report()
        return True

    def _failed(self, revision: int, reason: str, logged: bool) -> None:
        APPLY_FAILURES.labels(self.service).inc()
        self._status.failed(f"revision {revision}: {reason}")
        if logged:
            pass  # the runner logged its refusal, in one line
        elif self._last_failure == (revision, reason):
            log.debug("config.apply-failed-again", revision=revision, reason=reason)
        else:
            log.error(
                "config.apply-failed",
                revision=revision,
                running=self.revision if self.revision is not None else "-",
                reason=reason,
                retry_in=self._check_interval,
            )
        self._last_failure = (revision, reason)
        self.report()

    def report(self) -> None:
        """Send this instance's status report now (dropped while the control connection is down)."""
        report = self._status.report(ready=self._ready(), broker_connected=self._broker_connected())
        self.control.send(self._status_exchange, report.routing_key, report.to_body())
