"""`karnak up` while RabbitMQ cannot be reached: one clear line per service, quiet retries, then work."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import gateway_config
from tests.support.faults import TcpForwarder
from tests.support.servers import Gateway, free_port, wait_until

pytestmark = pytest.mark.e2e

SERVICES = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier")


def _lines(log: str, event: str) -> Counter[str]:
    """How many times each service logged `event`."""
    return Counter(re.findall(rf"service=(\S+) logger=\S+ event={re.escape(event)}\b", log))


@pytest.fixture
def gateway(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Gateway, TcpForwarder, str]]:
    broker = urlsplit(amqp_url)
    port = free_port()
    # The same broker, through an address that answers only once the forwarder starts.
    late_url = f"amqp://{broker.username}:{broker.password}@127.0.0.1:{port}/"
    forwarder = TcpForwarder(port, (broker.hostname or "localhost", broker.port or 5672))
    destinations = [{"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": free_port()}]
    config = gateway_config(late_url, prefix, tmp_path, destinations)
    config["metrics"]["ports"] = {service: free_port() for service in SERVICES}
    config["database"] = {"url": f"sqlite:///{tmp_path / 'karnak.db'}"}
    gateway = Gateway(config, tmp_path)
    yield gateway, forwarder, late_url
    gateway.stop()
    forwarder.stop()


def test_each_service_says_once_which_broker_it_cannot_reach_and_starts_working_when_it_can(
    gateway: tuple[Gateway, TcpForwarder, str],
) -> None:
    gw, forwarder, late_url = gateway
    gw.start(wait_ready=False)
    wait_until(
        lambda: set(_lines(gw.log(), "broker.unreachable")) >= set(SERVICES),
        30,
        f"every service reporting the unreachable broker (log: {gw.log_path})",
    )
    time.sleep(6)  # more connection attempts (back-off up to 5 s) go by without a word
    log = gw.log()
    assert _lines(log, "broker.unreachable") == Counter(dict.fromkeys(SERVICES, 1))
    assert "logger=pika" not in log
    unreachable = [line for line in log.splitlines() if "event=broker.unreachable" in line]
    password = urlsplit(late_url).password or ""
    for line in unreachable:
        assert late_url.replace(f":{password}@", ":***@") in line
        assert f":{password}@" not in line
        assert "rabbitmq-server -detached" in line and "Connection refused" in line
    assert not any(gw.ready(service) for service in SERVICES)

    forwarder.start()
    gw.wait_ready(timeout=30)
    assert _lines(gw.log(), "broker.reachable") == Counter(dict.fromkeys(SERVICES, 1))
