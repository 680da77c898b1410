"""`karnak broker setup --users DIR` creates every user through RabbitMQ's real management API.

This is what the compose `broker-setup` step and the Kubernetes Job run. The users (`karnak-<service>`) are
RabbitMQ-wide names, so the test gives them permissions on a virtual host of its own, made and deleted here,
and deletes the users at the end.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pika
import pika.exceptions
import pytest

from karnak_shared.broker_users import ALL_USERS, username
from tests.support.faults import _rabbitmqctl

pytestmark = pytest.mark.integration

MANAGEMENT_PORT = 15672


def _management_url(amqp_url: str) -> str:
    return f"http://{urlsplit(amqp_url).hostname}:{MANAGEMENT_PORT}"


def _management_answers(amqp_url: str) -> bool:
    parts = urlsplit(amqp_url)
    request = urllib.request.Request(_management_url(amqp_url) + "/api/overview")
    token = b64encode(f"{parts.username or 'guest'}:{parts.password or 'guest'}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return bool(json.load(answer).get("management_version"))
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _ctl(amqp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_rabbitmqctl(amqp_url), "-q", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def vhost(amqp_url: str, prefix: str) -> Iterator[str]:
    if not _management_answers(amqp_url):
        pytest.fail(
            f"RabbitMQ's management API does not answer at {_management_url(amqp_url)}: "
            "`rabbitmq-plugins enable rabbitmq_management` (.ci/run does it)"
        )
    name = f"{prefix}-vhost"
    assert _ctl(amqp_url, "add_vhost", name).returncode == 0
    admin = urlsplit(amqp_url).username or "guest"
    assert _ctl(amqp_url, "set_permissions", "-p", name, admin, ".*", ".*", ".*").returncode == 0
    try:
        yield name
    finally:
        _ctl(amqp_url, "delete_vhost", name)
        for user in ALL_USERS:
            _ctl(amqp_url, "delete_user", username(user))


def _url(amqp_url: str, vhost: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc, path="/" + quote(vhost, safe="")))


def _publish_refused(url: str, exchange: str, routing_key: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish(exchange, routing_key, b"x", pika.BasicProperties(delivery_mode=2))
        except pika.exceptions.UnroutableError:
            return False
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 403, exc
            return True
        return False
    finally:
        connection.close()


def _setup(url: str, prefix: str, passwords: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`karnak broker setup --users PASSWORDS` on a configuration with one DICOM destination."""
    config = tmp_path / "karnak.yml"
    config.write_text(
        f"broker: {{url: '{url}', prefix: {prefix}}}\n"
        "forward_nodes:\n  - ae_title: GW\n    destinations:\n"
        "      - {id: pacs, type: dicom, ae_title: PACS, hostname: localhost, port: 104}\n"
    )
    karnak = str(Path(sys.executable).with_name("karnak"))
    return subprocess.run(
        [karnak, "broker", "setup", "--config", str(config), "--users", str(passwords)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_setup_creates_each_user_through_the_management_api_with_only_its_own_rights(
    amqp_url: str, prefix: str, vhost: str, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    for user in ALL_USERS:
        (passwords / username(user)).write_text(secrets.token_hex(16) + "\n")
    admin = _url(amqp_url, vhost, urlsplit(amqp_url).username or "guest", urlsplit(amqp_url).password or "guest")
    done = _setup(admin, prefix, passwords, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"users on vhost {vhost}: " in done.stdout
    for user in ALL_USERS:
        assert username(user) in done.stdout
        assert (passwords / username(user)).read_text().strip() not in done.stdout + done.stderr

    def url_of(user: str) -> str:
        return _url(amqp_url, vhost, username(user), (passwords / username(user)).read_text().strip())

    # The processor may publish to the send exchange; the receiver's credentials may not.
    assert not _publish_refused(url_of("processor"), f"{prefix}.send", "pacs")
    assert _publish_refused(url_of("receiver"), f"{prefix}.send", "pacs")
    # A wrong password is refused at the door.
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(_url(amqp_url, vhost, username("processor"), "not-it")))


def test_setup_names_the_missing_password_files_and_creates_nobody(
    amqp_url: str, prefix: str, vhost: str, tmp_path: Path
) -> None:
    passwords = tmp_path / "passwords"
    passwords.mkdir()
    (passwords / username("receiver")).write_text("only-this-one\n")
    done = _setup(amqp_url, prefix, passwords, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(passwords / username("processor")) in done.stderr
    listed = _ctl(amqp_url, "list_users").stdout
    assert username("processor") not in listed.split()
