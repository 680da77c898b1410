"""`karnak broker setup` on the real local broker, then each service's own start path with its own user.

The users are those of tests/deploy/test_broker_users.py (created with rabbitmqctl for this test's prefix);
the topology is declared by the real command, as the administrator (the tests' guest). Each service then
passes its start-up check with broker.declare_topology false and gets its control connection up (its
own queue on the config and status exchanges), but is stopped, saying why, when told to declare.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from karnak_shared.broker import Broadcast, ControlConnection
from karnak_shared.broker_users import SERVICE_USERS, BrokerAccessRefused, check_service_access
from karnak_shared.topology import Topology
from tests.deploy.test_broker_users import users  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def declared(prefix: str, amqp_url: str, tmp_path: Path) -> Iterator[Topology]:
    """The topology `karnak broker setup` declared for a configuration with one DICOM destination."""
    config = tmp_path / "karnak.yml"
    config.write_text(
        f"broker: {{url: '{amqp_url}', prefix: {prefix}, declare_topology: false}}\n"
        "forward_nodes:\n  - ae_title: GW\n    destinations:\n"
        "      - {id: pacs, type: dicom, ae_title: PACS, hostname: localhost, port: 104}\n"
    )
    done = subprocess.run(
        [str(Path(sys.executable).with_name("karnak")), "broker", "setup", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"topology {prefix}" in done.stdout
    topology = Topology(
        prefix=prefix,
        retry_delays=(5, 30, 120, 600, 3600),
        delivery_limit=20,
        send_queues=(f"{prefix}.send.dicom.pacs",),
    )
    yield dataclasses.replace(topology, declare_topology=False)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        topology.delete(connection.channel())
    finally:
        connection.close()


@pytest.mark.parametrize("service", SERVICE_USERS)
def test_each_service_starts_with_its_own_user_on_the_set_up_topology_and_is_stopped_when_told_to_declare(
    declared: Topology,
    users: dict[str, str],  # noqa: F811 - the fixture
    service: str,
) -> None:
    url = users[service]
    check_service_access(url, declared)  # what `karnak run` does first: passes
    control = ControlConnection(
        url,
        [Broadcast(declared.config_exchange, "fanout"), Broadcast(declared.status_exchange, "topic", "request.status")],
        lambda _exchange, _body: None,
        name=f"test-{service}-control",
        declare_exchanges=False,
    ).start()
    try:
        deadline = time.monotonic() + 10
        while not control.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert control.connected, "the control connection of a service user came up"
    finally:
        control.stop()
    with pytest.raises(BrokerAccessRefused, match=r"may not declare the topology.*declare_topology: false"):
        check_service_access(url, dataclasses.replace(declared, declare_topology=True))


def test_a_service_started_before_the_setup_says_the_topology_is_missing(
    prefix: str,
    users: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    missing = Topology(prefix=prefix, retry_delays=(5,), delivery_limit=5, send_queues=(), declare_topology=False)
    with pytest.raises(BrokerAccessRefused, match=r"not declared.*karnak broker setup"):
        check_service_access(users["processor"], missing)


def test_the_receivers_user_is_refused_on_the_send_exchange_of_the_set_up_topology(
    declared: Topology,
    users: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(users["receiver"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.basic_publish(declared.send_exchange, f"{declared.prefix}.send.dicom.pacs", b"forged")
        assert refused.value.reply_code == 403
    finally:
        if connection.is_open:
            connection.close()
