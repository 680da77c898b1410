"""deploy/kubernetes's broker users, checked offline on the rendered base and KEDA overlay: each Deployment
connects as its own user from its own Secret, the Job karnak-broker-setup alone holds the administrator's
credentials and creates every user of `karnak_shared.broker_users` from the very Secrets the Deployments use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from karnak_shared.broker_users import ALL_USERS, permissions, username
from karnak_shared.cli import build_parser
from tests.deploy.test_deploy_kubernetes import (
    KUSTOMIZATIONS,
    SERVICES,
    config_text,
    load_with_stand_in_secrets,
    of_kind,
    render,
)

ADMIN_SECRET = "karnak-rabbitmq-default-user"
SECRETS_MOUNT = "/run/secrets/karnak"


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(KUSTOMIZATIONS[request.param])


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _secret_items(pod: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Path under the secrets mount -> (Secret, key), for the projected volume mounted there."""
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == SECRETS_MOUNT]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return {
        item["path"]: (source["secret"]["name"], item["key"])
        for source in volume["projected"]["sources"]
        for item in source["secret"].get("items", [])
    }


def _deployment(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == f"karnak-{service}"]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_each_deployment_connects_with_the_username_and_password_of_its_own_secret(
    objects: list[dict[str, Any]], service: str
) -> None:
    permissions(service)  # the table knows its user (raises otherwise)
    items = _secret_items(_pod(_deployment(objects, service)))
    assert items["broker-username"] == (f"karnak-broker-{service}", "username")
    assert items["broker-password"] == (f"karnak-broker-{service}", "password")
    other = {secret for secret, _ in items.values() if secret.startswith("karnak-broker-")} - {
        f"karnak-broker-{service}"
    }
    assert not other, f"{service} mounts other users' secrets {sorted(other)}"


def test_no_deployment_holds_the_administrators_credentials(objects: list[dict[str, Any]]) -> None:
    holders = [
        d["metadata"]["name"]
        for d in of_kind(objects, "Deployment")
        if ADMIN_SECRET in {secret for secret, _ in _secret_items(_pod(d)).values()}
    ]
    assert holders == []


def test_the_setup_job_runs_as_the_administrator_and_creates_every_user_from_the_deployments_secrets(
    objects: list[dict[str, Any]],
) -> None:
    (job,) = of_kind(objects, "Job")
    pod = _pod(job)
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    (container,) = pod["containers"]
    args = build_parser().parse_args(container["command"][1:])
    assert (args.command, args.action) == ("broker", "setup")
    items = _secret_items(pod)
    assert items["broker-username"] == (ADMIN_SECRET, "username")
    assert items["broker-password"] == (ADMIN_SECRET, "password")
    users_dir = Path(args.users).relative_to(SECRETS_MOUNT)
    for user in ALL_USERS:
        assert items[str(users_dir / username(user))] == (f"karnak-broker-{user}", "password"), user


def test_the_services_only_check_the_topology_that_the_job_declares(
    tmp_path: Path, objects: list[dict[str, Any]]
) -> None:
    assert load_with_stand_in_secrets(config_text(objects), tmp_path).broker.declare_topology is False
