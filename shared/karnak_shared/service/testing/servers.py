"""Real peers the tests and benchmarks run against: RabbitMQ, DCMTK's storescp, a scriptable SCP, the gateway."""

from __future__ import annotations

import functools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pika
import yaml

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
TEST_SECRETS_KEY = "6b61726e616b2d746573742d6b65792d6e6f742d666f722d70726f6475637421"


_HANDED_OUT: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port on loopback for a server a test starts, below the kernel's ephemeral range.

    A port of the ephemeral range (what binding port 0 gives) can be taken between this call and the
    server's bind by any outgoing connection or any process binding port 0: it happened to a service's
    metrics port. Ports below the range are only ever used by explicit binds; none is handed out twice.
    """
    floor = min(_ephemeral_floor(), 32768)
    for _ in range(500):
        port = random.randrange(max(1024, floor - 12000), floor)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def wait_until(predicate: Callable[[], bool], timeout: float, message: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


# --- RabbitMQ ---------------------------------------------------------------------------------------


def amqp_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether RabbitMQ at `url` accepts a connection within `timeout` seconds (one attempt)."""
    try:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = timeout
        pika.BlockingConnection(params).close()
        return True
    except Exception:  # noqa: BLE001
        return False


def find_broker() -> tuple[str, Any]:
    """An AMQP URL: $KARNAK_TEST_AMQP_URL, else localhost, else a testcontainers RabbitMQ.

    Returns the URL and the container to stop (or None). Raises RuntimeError saying how to provide one.
    """
    explicit = os.environ.get("KARNAK_TEST_AMQP_URL")
    if explicit:
        if amqp_reachable(explicit):
            return explicit, None
        raise RuntimeError(f"KARNAK_TEST_AMQP_URL={explicit} is set but RabbitMQ does not answer there")
    if amqp_reachable(DEFAULT_AMQP_URL):
        return DEFAULT_AMQP_URL, None
    if shutil.which("docker"):
        try:
            from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-not-found]

            container = RabbitMqContainer("rabbitmq:3.13").start()
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            return f"amqp://guest:guest@{host}:{port}/", container
        except Exception as exc:  # noqa: BLE001
            reason = f"starting a RabbitMQ container failed: {exc}"
    else:
        reason = "Docker is not available to start one"
    raise RuntimeError(
        "The tests need RabbitMQ and none could be found: nothing answers at "
        f"{DEFAULT_AMQP_URL} and {reason}. Start one (e.g. `rabbitmq-server -detached`, or "
        "`docker run -d -p 5672:5672 rabbitmq:3.13`) or set KARNAK_TEST_AMQP_URL."
    )


# --- DCMTK ------------------------------------------------------------------------------------------


def dcmtk_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"DCMTK's {name} is not installed: `apt-get install -y dcmtk` (CI's .ci/run does it)")
    return path


def dcmtk_env() -> dict[str, str]:
    # Without TCP_NODELAY, DCMTK on loopback stalls ~40 ms per transfer (Nagle + delayed ACK).
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class StoreSCP:
    """A DCMTK storescp writing what it receives, bit for bit, into `directory`."""

    ae_title: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    # What a subclass changes: more storescp options, and a process group of its own.
    extra_options: ClassVar[tuple[str, ...]] = ()
    own_session: ClassVar[bool] = False

    def start(self) -> StoreSCP:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory.parent / f"storescp-{self.ae_title}-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [
                dcmtk_tool("storescp"),
                "--fork",
                "+xa",  # accept every transfer syntax, compressed ones included
                "--bit-preserving",
                *self.extra_options,
                "-aet",
                self.ae_title,
                "-od",
                str(self.directory),
                str(self.port),
            ],
            env=dcmtk_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


def storescu(
    port: int, called: str, calling: str, files: list[Path], *extra: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK's storescu, proposing uncompressed syntaxes and JPEG lossless (-xs)."""
    command = [dcmtk_tool("storescu"), "-aet", calling, "-aec", called, "--required", "--propose-lossless", *extra]
    command += ["127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)


# --- a scriptable SCP -----------------------------------------------------------------------------


class ScriptedSCP:
    """A pynetdicom Storage SCP whose answer the test chooses (e.g. 0xA900 to refuse permanently).

    `delay` seconds pass before each answer, as with a PACS across a slow network.
    """

    def __init__(self, ae_title: str, port: int, status: int = 0x0000, delay: float = 0.0) -> None:
        from pydicom.uid import AllTransferSyntaxes
        from pynetdicom import AE, AllStoragePresentationContexts

        self.status = status
        self.delay = delay
        self.received: list[str] = []
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(str(context.abstract_syntax), AllTransferSyntaxes)
        self.port = port
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        if self.delay:
            time.sleep(self.delay)  # outside the lock: concurrent associations wait side by side
        with self._lock:
            if self.status in (0x0000, 0xB000):
                self.received.append(str(event.request.AffectedSOPInstanceUID))
            return self.status

    def start(self) -> ScriptedSCP:
        from pynetdicom import evt

        self._server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


# --- the gateway as processes ---------------------------------------------------------------------


def _started_services(arguments: tuple[str, ...]) -> list[str] | None:
    """The services `karnak up ... --only a b` starts, or None when it starts them all."""
    if "--only" not in arguments:
        return None
    named = []
    for argument in arguments[arguments.index("--only") + 1 :]:
        if argument.startswith("-"):
            break
        named.append(argument)
    return named


@dataclass
class Gateway:
    """The gateway started with `karnak up` on a configuration written for the test."""

    config: dict[str, Any]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "gateway.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "karnak.yml"

    @property
    def listener_port(self) -> int:
        return int(self.config["listener"]["port"])

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config['metrics']['ports'][service]}"

    def start(self, *extra: str, timeout: float = 30.0, wait_ready: bool = True) -> Gateway:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        karnak = str(Path(sys.executable).with_name("karnak"))
        self.process = subprocess.Popen(
            [karnak, "up", "--config", str(self.config_path), *extra],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        if wait_ready:
            self.wait_ready(timeout, _started_services(extra))
        return self

    def wait_ready(self, timeout: float = 30.0, services: list[str] | None = None) -> None:
        """Wait until each of `services` (default: every service with a metrics port) answers /readyz."""
        for service in services or list(self.config["metrics"]["ports"]):
            wait_until(functools.partial(self.ready, service), timeout, f"{service} ready (see {self.log_path})")

    def ready(self, service: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"karnak up exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.metrics_url(service) + "/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def metrics(self, service: str) -> str:
        with urllib.request.urlopen(self.metrics_url(service) + "/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def karnak(self, *args: str) -> subprocess.CompletedProcess[str]:
        karnak = str(Path(sys.executable).with_name("karnak"))
        return subprocess.run(
            [karnak, *args, "--config", str(self.config_path)], capture_output=True, text=True, timeout=60
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def resident_bytes(pid: int, field: str = "VmRSS") -> int:
    """VmRSS of a process (or another memory `field`, VmHWM for its peak), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def gateway_config(
    amqp_url: str, prefix: str, workdir: Path, destinations: list[dict[str, Any]], **overrides: Any
) -> dict[str, Any]:
    """A configuration dict for a test: its own prefix, ports, blob store and fast retries."""
    config: dict[str, Any] = {
        "listener": {"host": "127.0.0.1", "port": free_port()},
        "forward_nodes": [
            {
                "ae_title": "KARNAK-GW",
                "sources": [{"ae_title": "CT01"}, {"ae_title": "MR01", "hostname": "127.0.0.1"}],
                "destinations": destinations,
            }
        ],
        "broker": {"url": amqp_url, "prefix": prefix, "retry_delays": [1, 2, 3]},
        "blob_store": {"path": str(workdir / "blobs"), "max_inline_bytes": 65536},
        # The routing configuration's revisions live here (database mode): a test's own, never the cwd's.
        "database": {"url": f"sqlite:///{workdir / 'karnak.db'}"},
        "dicom_sender": {"idle_release_seconds": 2, "dimse_timeout": 10, "acse_timeout": 5, "network_timeout": 10},
        "metrics": {
            "host": "127.0.0.1",
            "ports": {"receiver": free_port(), "processor": free_port(), "dicom-sender": free_port()},
        },
        "logging": {"level": "INFO"},
        # Every message signed and checked, as in production (a fixed key: test data only).
        "secrets": {"key": TEST_SECRETS_KEY},
        # `karnak up` starts the console too: a port of its own, its first password inside the test's folder.
        "console": {
            "host": "127.0.0.1",
            "port": free_port(),
            "admin_password_file": str(workdir / "console-admin-password"),
        },
    }
    # The console serves on its ops port: the same one, so `karnak up` (and Gateway.start) wait for it too.
    config["metrics"]["ports"]["console"] = config["console"]["port"]
    config.update(overrides)
    return config
