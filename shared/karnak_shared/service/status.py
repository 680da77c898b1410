"""Status reports: every service instance says every 10 s what it runs (DESIGN.md section 14).

A report goes to the topic exchange `<prefix>.status` under `status.<service>`; `karnak status` (and
later the console) binds a queue of its own there, asks every instance for a report at once with a
`request.status` message, and prints what comes back. Reports carry no patient data and no secret:
`last_error` is the reason a revision could not be applied, as logged.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel, ConfigDict, ValidationError

from karnak_shared.errors import EnvelopeError

STATUS_INTERVAL_SECONDS = 10.0
REPORT_ROUTING_PREFIX = "status."
REQUEST_ROUTING_KEY = "request.status"
# An instance silent for three report intervals is gone (stopped, killed, or cut from the broker).
STALE_AFTER_SECONDS = 3 * STATUS_INTERVAL_SECONDS


def gateway_version() -> str:
    """The installed version of the gateway's shared library (every service runs the same one)."""
    try:
        return version("karnak-shared")
    except PackageNotFoundError:
        return "unknown"


class StatusReport(BaseModel):
    """What one instance says of itself."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str
    instance_id: str
    host: str
    pid: int
    version: str
    revision: int | None  # the configuration revision it runs; None before the first is applied
    ready: bool
    broker_connected: bool
    started_at: float  # Unix time
    last_error: str | None = None
    sent_at: float  # Unix time

    @property
    def routing_key(self) -> str:
        return f"{REPORT_ROUTING_PREFIX}{self.service}"

    def to_body(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_body(cls, body: bytes) -> StatusReport:
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            raise EnvelopeError(f"not a status report: {exc.errors()[0]['msg']}") from None


@dataclass
class InstanceStatus:
    """The state of this instance that its status reports carry; updated by the runtime from any thread."""

    service: str
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    revision: int | None = None
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def applied(self, revision: int) -> None:
        with self._lock:
            self.revision, self.last_error = revision, None

    def failed(self, reason: str) -> None:
        with self._lock:
            self.last_error = reason

    def report(self, *, ready: bool, broker_connected: bool) -> StatusReport:
        with self._lock:
            revision, last_error = self.revision, self.last_error
        return StatusReport(
            service=self.service,
            instance_id=self.instance_id,
            host=self.host,
            pid=self.pid,
            version=gateway_version(),
            revision=revision,
            ready=ready,
            broker_connected=broker_connected,
            started_at=self.started_at,
            last_error=last_error,
            sent_at=time.time(),
        )
