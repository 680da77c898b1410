"""docker-compose.yml's broker users, checked without Docker: one user per gateway service, created by the
one-shot broker-setup before any service starts, and the administrator's password in broker-setup only."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from karnak_shared.broker_users import ALL_USERS, permissions, username
from karnak_shared.cli import build_parser
from tests.deploy.test_compose import (
    BROKER_SETUP,
    COMPOSE,
    GATEWAY,
    MAKE_SECRETS,
    SECRETS_DIR,
    SERVICES,
    _command,
    _secret_targets,
    service_config,
)

ADMIN_SECRETS = {"rabbitmq-password", "rabbitmq-credentials"}


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secrets as deploy/compose/make-secrets.sh writes them."""
    directory = tmp_path_factory.mktemp("secrets") / "secrets"
    subprocess.run(["sh", str(MAKE_SECRETS), str(directory)], check=True, capture_output=True, timeout=60)
    return directory


def _password_file(secrets_dir: Path, secret: str) -> str:
    return (secrets_dir / Path(COMPOSE["secrets"][secret]["file"]).name).read_text().strip()


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_connects_as_its_own_broker_user_with_its_own_password(
    name: str, secrets_dir: Path
) -> None:
    url = urlsplit(service_config(name, secrets_dir).broker.url.get_secret_value())
    assert url.username == username(name)
    permissions(name)  # the table knows its user (raises otherwise)
    mounted = {target: secret for secret, target in _secret_targets(SERVICES[name]).items()}
    assert url.password == _password_file(secrets_dir, mounted[SECRETS_DIR + "broker-password"])


def test_no_two_gateway_services_share_a_broker_password(secrets_dir: Path) -> None:
    passwords = [urlsplit(service_config(n, secrets_dir).broker.url.get_secret_value()).password for n in GATEWAY]
    admin = _password_file(secrets_dir, "rabbitmq-password")
    assert len(set(passwords)) == len(passwords)
    assert admin not in passwords


def test_only_rabbitmq_and_the_broker_setup_hold_the_administrators_password() -> None:
    holders = sorted(name for name, service in SERVICES.items() if ADMIN_SECRETS & set(_secret_targets(service)))
    assert holders == sorted(["rabbitmq", BROKER_SETUP])


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_mounts_no_other_services_broker_password(name: str) -> None:
    broker_secrets = {s for s in _secret_targets(SERVICES[name]) if s.startswith("broker-")}
    assert broker_secrets == {f"broker-{name}"}


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_starts_after_the_broker_setup_succeeded(name: str) -> None:
    assert SERVICES[name]["depends_on"][BROKER_SETUP] == {"condition": "service_completed_successfully"}


def test_the_broker_setup_is_a_one_shot_that_creates_every_user_with_the_services_passwords(secrets_dir: Path) -> None:
    setup = SERVICES[BROKER_SETUP]
    assert setup.get("restart") == "no"
    assert setup["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    args = build_parser().parse_args(_command(setup)[1:])
    assert (args.command, args.action) == ("broker", "setup")
    mounted = {target: secret for secret, target in _secret_targets(setup).items()}
    for user in ALL_USERS:
        # What the setup reads as DIR/karnak-<user> is the very secret the service connects with.
        secret = mounted.get(f"{args.users.rstrip('/')}/{username(user)}")
        assert secret == f"broker-{user}", user
        assert _password_file(secrets_dir, secret)
    config = service_config(BROKER_SETUP, secrets_dir)
    assert urlsplit(config.broker.url.get_secret_value()).username == "karnak"


def test_the_services_only_check_the_topology_that_the_broker_setup_declares(secrets_dir: Path) -> None:
    for name in GATEWAY:
        assert service_config(name, secrets_dir).broker.declare_topology is False, name


def test_rabbitmqs_healthcheck_waits_for_the_management_api_that_the_setup_uses() -> None:
    test = " ".join(SERVICES["rabbitmq"]["healthcheck"]["test"])
    assert "check_port_connectivity" in test
    plugins = (Path(__file__).resolve().parents[2] / "deploy" / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins
