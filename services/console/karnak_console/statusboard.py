"""The latest status report of every service instance (DESIGN.md section 14), kept by a background thread.

The console binds a queue of its own (server-named, exclusive, auto-delete) to `<prefix>.status` for
`status.#`, asks every instance for a report at once (`request.status`) when it connects, and keeps the
last report per instance. Instances silent for three report intervals are shown as stale.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pydantic import BaseModel, ConfigDict, ValidationError

from karnak_shared.broker import open_connection
from karnak_shared.errors import BrokerUnavailable
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.console.status")

# What talking to RabbitMQ can raise: pika's own errors, and its connector's (a handshake timeout is not an
# AMQPError), besides the gateway's BrokerUnavailable and the socket's OSError.
BROKER_ERRORS = (BrokerUnavailable, pika.exceptions.AMQPError, AMQPConnectorException, OSError)

REPORT_ROUTING_PATTERN = "status.#"
REQUEST_ROUTING_KEY = "request.status"
STALE_AFTER_SECONDS = 30.0


class StatusReport(BaseModel):
    """One instance's report as the services publish it (fields the console does not know are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str
    instance_id: str
    host: str
    pid: int
    version: str
    revision: int | None
    ready: bool
    broker_connected: bool
    started_at: float
    last_error: str | None = None
    sent_at: float | None = None


class StatusBoard:
    """Consumes status reports in a daemon thread; `reports()` is safe from any thread."""

    def __init__(self, broker_url: str, prefix: str, heartbeat: int = 30) -> None:
        self._url = broker_url
        self.exchange = f"{prefix}.status"
        self._heartbeat = heartbeat
        self._latest: dict[str, tuple[StatusReport, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-status", daemon=True)

    def start(self) -> StatusBoard:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def reports(self) -> list[tuple[StatusReport, float]]:
        """(report, seconds since it arrived) of every instance heard from, by service then host."""
        now = time.monotonic()
        with self._lock:
            items = [(report, now - received) for report, received in self._latest.values()]
        return sorted(items, key=lambda item: (item[0].service, item[0].host, item[0].pid))

    def take(self, body: bytes) -> None:
        try:
            report = StatusReport.model_validate_json(body)
        except ValidationError:
            log.warning("status.unreadable-report", bytes=len(body))
            return
        with self._lock:
            self._latest[report.instance_id] = (report, time.monotonic())
            # Forget instances gone for long: a restarted service gets a new instance id each time.
            horizon = time.monotonic() - 10 * STALE_AFTER_SECONDS
            for key in [k for k, (_, at) in self._latest.items() if at < horizon]:
                del self._latest[key]

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            connection: Any = None
            try:
                connection = open_connection(self._url, self._heartbeat, "karnak-console-status")
                channel = connection.channel()
                channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
                queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
                channel.queue_bind(queue, self.exchange, routing_key=REPORT_ROUTING_PATTERN)
                channel.basic_consume(queue, lambda ch, method, props, body: self.take(body), auto_ack=True)
                channel.basic_publish(self.exchange, REQUEST_ROUTING_KEY, json.dumps({}).encode())
                self.connected.set()
                backoff = 0.5
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.5)
            except BROKER_ERRORS as exc:
                if self.connected.is_set():
                    log.warning("status.broker-lost", error=type(exc).__name__)
                self.connected.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 15.0)
            finally:
                if connection is not None and connection.is_open:
                    try:
                        connection.close()
                    except pika.exceptions.AMQPError:
                        pass
