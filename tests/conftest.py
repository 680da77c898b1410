"""Fixtures that start or find real servers: RabbitMQ, DCMTK peers, the gateway; markers set by folder.

Tests live in subject folders (tests/dicom, tests/shared, tests/<service>, tests/deploy, tests/e2e). The
markers say what a test needs, so `make unit` can run the fast ones alone:
- `e2e`: every test under tests/e2e (the gateway as processes);
- `integration`: every test that uses a real broker (the `amqp_url` fixture), and the modules that say so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_shared.config import GatewayConfig
from karnak_shared.topology import Topology
from tests.support.servers import find_broker, free_port

# The small fixtures of the logic tests (instances, a recording publisher), for every folder.
pytest_plugins = ["tests.support.fixtures"]

_topologies: list[tuple[str, Topology]] = []

# Folders whose every test gets a marker.
FOLDER_MARKERS = {"e2e": "e2e"}
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, and as `integration` when it uses the real broker."""
    for item in items:
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])
        if "amqp_url" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("e2e"):
            item.add_marker("integration")


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """RabbitMQ for the whole run; fails (never skips) with instructions when none can be had."""
    try:
        url, container = find_broker()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield url
    _delete_topologies()
    if container is not None:
        container.stop()


def _delete_topologies() -> None:
    while _topologies:
        broker_url, topology = _topologies.pop()
        try:
            connection = pika.BlockingConnection(pika.URLParameters(broker_url))
            topology.delete(connection.channel())
            connection.close()
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass


@pytest.fixture(autouse=True, scope="module")
def _delete_each_modules_queues() -> Iterator[None]:
    """Delete the queues a test module declared when it ends.

    Every test declares a quorum queue per destination and delay tier under its own prefix; kept until the
    end of the run they pile up by the hundred and RabbitMQ slows to a stall (seen: AMQP handshake timeouts).
    """
    yield
    _delete_topologies()


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix of this test alone, so tests never see each other's messages."""
    return f"karnak-test-{uuid.uuid4().hex[:10]}"


def register_topology(url: str, config: GatewayConfig) -> Topology:
    """Remember a test's topology so its queues are deleted at the end of the run."""
    topology = Topology.from_config(config)
    _topologies.append((url, topology))
    return topology


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
        "dicom_sender": {"idle_release_seconds": 2, "dimse_timeout": 10, "acse_timeout": 5, "network_timeout": 10},
        "metrics": {
            "host": "127.0.0.1",
            "ports": {"receiver": free_port(), "processor": free_port(), "dicom-sender": free_port()},
        },
        "logging": {"level": "INFO"},
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
