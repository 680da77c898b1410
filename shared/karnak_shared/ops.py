"""Each service's operations endpoint: `/metrics` (Prometheus), `/healthz` and `/readyz`.

`/healthz` answers 200 while the process serves; `/readyz` answers 200 only while every readiness check
passes (broker connected, listener bound...), 503 with the failing checks otherwise, so Kubernetes and
compose stop routing to a replica that cannot work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from karnak_shared.logs import EventLogger

log = EventLogger("karnak.ops")

BROKER_CONNECTED = Gauge(
    "karnak_broker_connected",
    "1 while the service's connection to RabbitMQ is up",
    ["service", "role"],
)


class OpsServer:
    """HTTP server of the operations endpoints, in a daemon thread."""

    def __init__(self, service: str, host: str, port: int) -> None:
        self.service = service
        self._checks: dict[str, Callable[[], bool]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, generate_latest(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._answer(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    failing = server.failing_checks()
                    if failing:
                        self._answer(503, ("not ready: " + ", ".join(failing) + "\n").encode(), "text/plain")
                    else:
                        self._answer(200, b"ready\n", "text/plain")
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # scrapes every few seconds would drown the service's own log

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"{service}-ops", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        """Register a readiness check; `/readyz` fails while any check returns False."""
        self._checks[name] = check

    def failing_checks(self) -> list[str]:
        if not self._checks:
            # The service registers its checks once its parts are up: until then it is starting.
            return ["starting"]
        return [name for name, check in self._checks.items() if not check()]

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("ops.listening", service=self.service, port=self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def broker_state_recorder(service: str, role: str) -> Callable[[bool], None]:
    """A callback for `Publisher`/`Consumer` that mirrors the connection state into a gauge."""
    gauge = BROKER_CONNECTED.labels(service=service, role=role)
    gauge.set(0)
    return lambda connected: gauge.set(1 if connected else 0)
