"""Breaking things on purpose: killing a service of `karnak up`, stopping RabbitMQ, filling a disk, taking
a peer away.

Also what the fault tests count with: a storescp that keeps every delivery in its own file (so duplicates
are seen, not overwritten), storescu runs whose output tells which instances were acknowledged, queue
depths and a process's resident memory.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pika.exceptions

from karnak_dicom.testing import dataset_bytes
from tests.support.kheops import FakeKheops
from tests.support.servers import Gateway, StoreSCP, amqp_reachable, dcmtk_env, dcmtk_tool, wait_until

# --- a destination that counts every delivery ------------------------------------------------------


@dataclass(frozen=True)
class Deliveries:
    """What a destination received: complete instances per SOP Instance UID, and transfers cut short."""

    per_instance: Counter[str]
    incomplete: int

    @property
    def total(self) -> int:
        return sum(self.per_instance.values())

    @property
    def distinct(self) -> set[str]:
        return set(self.per_instance)

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each instance."""
        return self.total - len(self.per_instance)


@dataclass
class CountingStoreSCP(StoreSCP):
    """storescp with unique file names: a second delivery of an instance is a second file, not an overwrite."""

    extra_options = ("--unique-filenames",)
    # Its own process group: stopping it stops the forked child serving an association too.
    own_session = True

    def stop(self) -> None:
        """Stop the listener and any child in the middle of an association (the destination goes down)."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        self.process = None

    def deliveries(self, originals: dict[str, Path]) -> Deliveries:
        """Every file checked against the original instance, byte for byte (dataset after the file meta).

        A file holding only the beginning of an original is a transfer cut short (a sender killed mid
        C-STORE): storescp answered no success for it, so it is counted apart, never as a delivery. Any
        other difference is corruption and fails.
        """
        from pydicom import dcmread

        per_instance: Counter[str] = Counter()
        incomplete = 0
        expected = {uid: dataset_bytes(path) for uid, path in originals.items()}
        for path in self.files():
            try:
                uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            except Exception:  # noqa: BLE001 - cut within its first attributes
                if path.stat().st_size >= 4096:
                    raise AssertionError(f"{path} is not DICOM and too long to be a cut transfer") from None
                incomplete += 1
                continue
            if uid not in expected:
                raise AssertionError(f"{path} holds {uid}, an instance that was never sent")
            received = dataset_bytes(path)
            if received == expected[uid]:
                per_instance[uid] += 1
            elif expected[uid].startswith(received):
                incomplete += 1
            else:
                raise AssertionError(f"{path} holds instance {uid} with bytes changed on the way")
        return Deliveries(per_instance, incomplete)

    def count(self) -> int:
        """Files so far (cheap: for waiting, not for judging)."""
        return sum(1 for _ in self.directory.iterdir())


# --- a modality that resends what was not acknowledged ---------------------------------------------


@dataclass
class SendOutcome:
    """What one storescu run says of each file: acknowledged (Success or Warning) or not."""

    acknowledged: list[Path]
    refused: dict[Path, str]
    output: str
    returncode: int

    def unacknowledged(self, files: list[Path]) -> list[Path]:
        done = set(self.acknowledged)
        return [f for f in files if f not in done]


_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+)\)\s*$")


def parse_storescu(output: str, returncode: int) -> SendOutcome:
    """Read `storescu -v` output: each 'Sending file' is settled by the next 'Received Store Response'."""
    acknowledged: list[Path] = []
    refused: dict[Path, str] = {}
    current: Path | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = Path(sending.group(1).strip())
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            status = response.group(1)
            if status.startswith(("Success", "Warning")):
                acknowledged.append(current)
            else:
                refused[current] = status
            current = None
    return SendOutcome(acknowledged, refused, output, returncode)


@dataclass
class Modality:
    """storescu sending to the gateway in the background, halting on nothing (`-nh`), verbose (`-v`)."""

    port: int
    called: str
    calling: str
    log_dir: Path
    runs: list[SendOutcome] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _log: Path | None = None

    def start(self, files: list[Path]) -> Modality:
        self._log = self.log_dir / f"storescu-{len(self.runs)}.log"
        command = [dcmtk_tool("storescu"), "-v", "-nh", "-aet", self.calling, "-aec", self.called, "--required"]
        command += ["--propose-lossless", "127.0.0.1", str(self.port), *map(str, files)]
        self._process = subprocess.Popen(
            command, env=dcmtk_env(), stdout=open(self._log, "wb"), stderr=subprocess.STDOUT
        )
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout: float = 180) -> SendOutcome:
        assert self._process is not None and self._log is not None
        returncode = self._process.wait(timeout=timeout)
        outcome = parse_storescu(self._log.read_text(errors="replace"), returncode)
        self.runs.append(outcome)
        self._process = None
        return outcome

    def send(self, files: list[Path], timeout: float = 180) -> SendOutcome:
        return self.start(files).wait(timeout)

    def send_until_acknowledged(self, files: list[Path], attempts: int = 5, pause: float = 1.0) -> int:
        """Resend what was not acknowledged, as a modality's queue does; return how many runs it took."""
        pending = list(files)
        for attempt in range(1, attempts + 1):
            outcome = self.send(pending)
            pending = outcome.unacknowledged(pending)
            if not pending:
                return attempt
            time.sleep(pause)
        last = self.runs[-1]
        raise AssertionError(
            f"{len(pending)} instance(s) still not acknowledged after {attempts} sends; last output:\n"
            f"{last.output[-3000:]}"
        )

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


# --- the services of `karnak up` ---------------------------------------------------------------------


def _parent_of(pid: str) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (2nd field) is in parentheses and may hold spaces: split after its closing one.
    return int(stat.rsplit(")", 1)[1].split()[1])


def service_pid(gateway: Gateway, service: str) -> int:
    """The pid of `karnak_shared.cli run <service>` started by this gateway's `karnak up`."""
    assert gateway.process is not None, "the gateway is not running"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _parent_of(entry.name) != gateway.process.pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        words = [a.decode(errors="replace") for a in argv]
        if "karnak_shared.cli" in words and "run" in words and words[words.index("run") + 1 :][:1] == [service]:
            found.append(int(entry.name))
    if len(found) != 1:
        raise AssertionError(f"expected one {service} process under karnak up (pid {gateway.process.pid}): {found}")
    return found[0]


def kill_service(gateway: Gateway, service: str, restart_timeout: float = 30.0) -> tuple[int, int]:
    """SIGKILL one service and wait until `karnak up` has restarted it and it is ready; (old, new) pid."""
    old = service_pid(gateway, service)
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        try:
            pid = service_pid(gateway, service)
        except AssertionError:
            return False  # between the death and the new process
        return pid != old and gateway.ready(service)

    wait_until(restarted, restart_timeout, f"{service} restarted by karnak up (log: {gateway.log_path})")
    return old, service_pid(gateway, service)


# --- RabbitMQ ----------------------------------------------------------------------------------------


def queue_depths(url: str, queues: list[str]) -> dict[str, int]:
    """Messages ready in each queue (passive declares: a missing queue is an error)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return {name: int(channel.queue_declare(name, passive=True).method.message_count) for name in queues}
    finally:
        connection.close()


def _rabbitmqctl(url: str) -> str:
    path = shutil.which("rabbitmqctl")
    if path is None:
        raise AssertionError(
            "rabbitmqctl is not installed: the broker outage test stops and starts the local RabbitMQ's app "
            "with it (`apt-get install -y rabbitmq-server`, which CI's machine has)"
        )
    host = urlsplit(url).hostname or ""
    if host not in ("localhost", "127.0.0.1", "::1"):
        raise AssertionError(f"rabbitmqctl controls the local broker, but the tests use RabbitMQ at {host}")
    return path


@contextmanager
def broker_app_stopped(url: str) -> Iterator[None]:
    """`rabbitmqctl stop_app` on entry, `start_app` on exit whatever happens (the broker is shared)."""
    ctl = _rabbitmqctl(url)
    stopped = subprocess.run([ctl, "-q", "stop_app"], capture_output=True, text=True, timeout=60)
    try:
        if stopped.returncode != 0:
            raise AssertionError(f"rabbitmqctl stop_app failed: {stopped.stdout}{stopped.stderr}")
        yield
    finally:
        started = subprocess.run([ctl, "-q", "start_app"], capture_output=True, text=True, timeout=120)
        wait_until(lambda: amqp_reachable(url, timeout=2), 60, "RabbitMQ answering again after start_app")
        if started.returncode != 0:
            raise AssertionError(f"rabbitmqctl start_app failed: {started.stdout}{started.stderr}")


# --- a small disk -----------------------------------------------------------------------------------


@contextmanager
def small_tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` (root only), unmounted on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        raise AssertionError(
            f"cannot mount a {size} tmpfs on {directory} to fill the blob store (the test needs root and "
            f"mount permission, e.g. a privileged container): {mounted.stderr.strip()}"
        )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=30)


# --- an HTTP peer that goes away and comes back -------------------------------------------------------


def serve_again(fake: FakeKheops, port: int) -> None:
    """Serve a stopped fake Kheops again on the same port (its URL in the configuration stays valid)."""
    handler = fake.httpd.RequestHandlerClass
    fake.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    fake.httpd.daemon_threads = True
    threading.Thread(target=fake.httpd.serve_forever, name="fake-kheops", daemon=True).start()


# --- a broker address that answers only once the test says so -------------------------------------


class TcpForwarder:
    """Forwards a local port to another address (e.g. RabbitMQ), from `start()` on: a peer that comes up late."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self._server: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> TcpForwarder:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
