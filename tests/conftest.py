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

import pika
import pytest

from karnak_shared.config import GatewayConfig
from karnak_shared.service.testing.seaweedfs import SeaweedS3
from karnak_shared.service.testing.servers import find_broker
from karnak_shared.service.testing.servers import gateway_config as gateway_config  # the tests import it from here
from karnak_shared.topology import Topology

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the whole run, on free ports, with its own data folder."""
    try:
        server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


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
