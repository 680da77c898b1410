"""Every service started while RabbitMQ cannot be reached: one clear line each, quiet retries, then work.

The services run as `karnak run SERVICE` processes, as a Kubernetes Deployment or a compose service
starts them (`karnak up` itself refuses to start without a broker, saying so once).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from karnak_shared.service.live_config import starting_config
from tests.conftest import gateway_config
from tests.support.faults import TcpForwarder
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier")


def _lines(log: str, event: str) -> Counter[str]:
    """How many times each service logged `event`."""
    return Counter(re.findall(rf"service=(\S+) logger=\S+ event={re.escape(event)}(?:\s|$)", log))


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class Services:
    """The six services as `karnak run` processes writing to one log."""

    def __init__(self, config: Path, ports: dict[str, int], log: Path) -> None:
        self.ports = ports
        self.log_path = log
        karnak = str(Path(sys.executable).with_name("karnak"))
        output = open(log, "ab")
        self.processes = [
            subprocess.Popen(
                [karnak, "run", name, "--config", str(config), "--metrics-port", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=config.parent,
            )
            for name, port in ports.items()
        ]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> dict[str, bool]:
        return {name: _ready(port) for name, port in self.ports.items()}

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def started(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Services, TcpForwarder, str]]:
    broker = urlsplit(amqp_url)
    port = free_port()
    # The same broker, through an address that answers only once the forwarder starts.
    late_url = f"amqp://{broker.username}:{broker.password}@127.0.0.1:{port}/"
    forwarder = TcpForwarder(port, (broker.hostname or "localhost", broker.port or 5672))
    destinations = [{"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": free_port()}]
    config = gateway_config(late_url, prefix, tmp_path, destinations)
    config["metrics"]["ports"] = {service: free_port() for service in SERVICES}
    config["database"] = {"url": f"sqlite:///{tmp_path / 'karnak.db'}"}
    path = tmp_path / "karnak.yml"
    path.write_text(yaml.safe_dump(config))
    starting_config(path)  # revision 1 stored once, before six processes would race for it
    services = Services(path, config["metrics"]["ports"], tmp_path / "services.log")
    yield services, forwarder, late_url
    services.stop()
    forwarder.stop()


def test_each_service_says_once_which_broker_it_cannot_reach_and_starts_working_when_it_can(
    started: tuple[Services, TcpForwarder, str],
) -> None:
    services, forwarder, late_url = started
    wait_until(
        lambda: set(_lines(services.log(), "broker.unreachable")) >= set(SERVICES),
        45,
        f"every service reporting the unreachable broker (log: {services.log_path})",
    )
    time.sleep(6)  # more connection attempts (back-off up to 5 s) go by without a word
    log = services.log()
    assert _lines(log, "broker.unreachable") == Counter(dict.fromkeys(SERVICES, 1))
    assert "logger=pika" not in log
    password = urlsplit(late_url).password or ""
    for line in (line for line in log.splitlines() if "event=broker.unreachable" in line):
        assert late_url.replace(f":{password}@", ":***@") in line
        assert f":{password}@" not in line
        assert "rabbitmq-server -detached" in line and "Connection refused" in line
    assert not any(services.ready().values())

    forwarder.start()
    wait_until(lambda: all(services.ready().values()), 45, f"every service ready: {services.ready()}")
    assert _lines(services.log(), "broker.reachable") == Counter(dict.fromkeys(SERVICES, 1))
