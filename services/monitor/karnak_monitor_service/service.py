"""The monitor on the service runtime: `<prefix>.monitor` (bound to `transfer.#`) into the monitoring tables.

Each event is counted once (`SeriesRecorder` keeps the ids of counted events), so a redelivery, after a
crash or a lost connection, changes no count; the delivery is acked only once its transaction committed.
A database that cannot take an event now sends it through the delay queues (parked once they are used
up, `karnak dead replay` brings it back). Rows older than `monitoring.retention_days` go every hour.

Metrics: events consumed by kind and whether they were counted or seen before; the age of the last event
at consumption and the depth of the queue, which the `KarnakMonitorFallingBehind` alert watches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from karnak_monitor.recorder import SeriesRecorder
from karnak_monitor.retention import purge
from karnak_shared.broker import inspect_queues
from karnak_shared.config import GatewayConfig
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.logs import EventLogger
from karnak_shared.service import Ack, EventMessage, Outcome, Providers, Retry, Service, ServiceRunner, Work, consume
from karnak_shared.service.entrypoints import timer
from karnak_shared.service.live_config import run_live
from karnak_shared.topology import Topology

log = EventLogger("karnak.monitor")
SERVICE = "monitor"
RETENTION_INTERVAL_SECONDS = 3600.0
QUEUE_CHECK_SECONDS = 15.0

EVENTS = Counter(
    "karnak_monitor_events_total",
    "Transfer events the monitor consumed, by kind, and whether they were counted or seen before (redelivered)",
    ["kind", "outcome"],
)
LAG = Gauge(
    "karnak_monitor_event_lag_seconds",
    "Age of the last transfer event when the monitor recorded it (0 while its queue is empty)",
)
QUEUED = Gauge("karnak_monitor_queue_messages", "Transfer events waiting in the monitor's queue")
PURGED = Counter("karnak_monitor_purged_series_total", "Series rows deleted by the retention")


@dataclass(frozen=True)
class Monitoring:
    """What the handler records with, and what the timers need, for one configuration."""

    recorder: SeriesRecorder
    sessions: Callable[[], Session]
    retention: dt.timedelta
    broker_url: str
    queue: str


def monitor_queue(config: GatewayConfig, topology: Topology) -> list[str]:
    return [topology.monitor_queue]


class MonitorService(Service[Monitoring]):
    """Records each transfer event once into the monitoring tables."""

    name = SERVICE

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._database_ok = True
        self._last_event_at: float | None = None  # when the last recorded event happened
        self._recorded_since_check = False

    def topology(self, config: GatewayConfig) -> Topology:
        # The monitor declares its own queue (the other services do not: see Topology.monitor).
        return dataclasses.replace(Topology.from_config(config), monitor=True)

    def configure(self, config: GatewayConfig, providers: Providers) -> Monitoring:
        settings = config.monitoring

        def sessions() -> Session:
            # Opened on first use: a database down at start delays recording (retried), it refuses nothing.
            return providers.database()()

        return Monitoring(
            recorder=SeriesRecorder(sessions, settings.original_identifiers),
            sessions=sessions,
            retention=dt.timedelta(days=settings.retention_days),
            broker_url=config.broker.url.get_secret_value(),
            queue=self.topology(config).monitor_queue,
        )

    @consume(monitor_queue, message=EventMessage)
    def record(self, message: EventMessage, work: Work[Monitoring]) -> Outcome:
        """Count one event into its series row (nothing when it was counted before)."""
        event = message.event
        try:
            counted = work.state.recorder.record(event)
        except SQLAlchemyError as exc:
            # The driver's message may name the database with its password: only its kind is kept.
            self._database_ok = False
            return Retry(f"monitoring database unavailable ({type(exc).__name__})")
        self._database_ok = True
        EVENTS.labels(event.kind, "counted" if counted else "redelivered").inc()
        LAG.set(max(0.0, self._clock() - event.at))
        self._last_event_at, self._recorded_since_check = event.at, True
        return Ack()

    @timer(QUEUE_CHECK_SECONDS)
    def check_queue(self, state: Monitoring) -> None:
        """How many events wait, and the lag when no event says it: 0 while the queue is empty; while
        events wait and none was recorded since the last check, at least the age of the last one recorded."""
        try:
            found = inspect_queues(state.broker_url, [state.queue])[state.queue]
        except BrokerUnavailable:
            return  # the broker-state gauges say so already
        depth = found.messages if found is not None else 0
        QUEUED.set(depth)
        if depth == 0:
            LAG.set(0)
        elif not self._recorded_since_check and self._last_event_at is not None:
            LAG.set(max(0.0, self._clock() - self._last_event_at))
        self._recorded_since_check = False

    @timer(RETENTION_INTERVAL_SECONDS)
    def retention(self, state: Monitoring) -> None:
        """Delete the series rows last seen before the retention."""
        done = purge(state.sessions, state.retention)
        PURGED.inc(done.series)
        if done.series or done.events:
            log.info("monitoring.purged", series=done.series, events=done.events, days=state.retention.days)

    def start(self, runner: ServiceRunner[Monitoring]) -> None:
        # Once at start too: a monitor restarted more often than hourly would otherwise never purge.
        try:
            self.retention(runner.state)
        except SQLAlchemyError as exc:
            log.warning("monitoring.purge-failed", reason=type(exc).__name__)

    def readiness(self) -> dict[str, Callable[[], bool]]:
        return {"database": lambda: self._database_ok}


def run(config: GatewayConfig, metrics_port: int | None = None) -> None:
    """Run the monitor until SIGTERM/SIGINT, following the configuration's revisions."""
    run_live(MonitorService(), config, metrics_port)
