"""docker-compose.yml and the Dockerfile, checked without Docker: every gateway service runs a `karnak`
command that exists, with a configuration that validates, and can be scaled where it should."""

from __future__ import annotations

import importlib
import json
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from karnak_shared.cli import build_parser, services
from karnak_shared.config import load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_TARGET = "/etc/karnak/karnak.yml"
BLOBS_TARGET = "/var/lib/karnak/blobs"
SCALABLE = ("processor", "dicom-sender")


def _load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The gateway's own services are the ones built from this repository's Dockerfile.
GATEWAY = sorted(name for name, service in SERVICES.items() if "build" in service)


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    target: str
    read_only: bool


def _mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):  # short syntax: SOURCE:TARGET[:MODE]
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            mounts.append(Mount(kind, source, target, "ro" in ",".join(mode).split(",")))
        else:
            source, read_only = volume.get("source", ""), bool(volume.get("read_only"))
            mounts.append(Mount(volume["type"], source, volume["target"], read_only))
    return mounts


def _mount_at(service: dict[str, Any], target: str) -> Mount:
    found = [m for m in _mounts(service) if m.target == target]
    assert len(found) == 1, f"expected one mount at {target}, found {found}"
    return found[0]


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _metrics_port(service: dict[str, Any]) -> int:
    port: int = build_parser().parse_args(_command(service)[1:]).metrics_port
    return port


# --- the commands --------------------------------------------------------------------------------


def test_the_gateway_services_include_the_receiver_the_processor_and_the_dicom_sender() -> None:
    assert {"receiver", "processor", "dicom-sender"} <= set(GATEWAY)


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_runs_karnak_run_with_its_own_name(name: str) -> None:
    command = _command(SERVICES[name])
    assert command[:3] == ["karnak", "run", name]


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_is_a_service_the_karnak_cli_knows(name: str) -> None:
    installed = sorted(services())
    assert name in installed, f"no karnak.services entry point named {name!r}; installed: {installed}"


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_command_parses_with_the_karnak_cli(name: str) -> None:
    command = _command(SERVICES[name])
    try:
        args = build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"`{shlex.join(command)}` is not a valid karnak command line")
    assert args.command == "run"
    assert args.service == name
    assert args.metrics_port is not None, "pass --metrics-port explicitly, the healthcheck depends on it"


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_healthcheck_asks_its_own_metrics_port_for_healthz(name: str) -> None:
    service = SERVICES[name]
    port = _metrics_port(service)
    test = service["healthcheck"]["test"]
    text = test if isinstance(test, str) else " ".join(test)
    assert f"127.0.0.1:{port}/healthz" in text
    assert _environment(service).get("KARNAK_METRICS_PORT") == str(port), (
        "KARNAK_METRICS_PORT tells the image's HEALTHCHECK which port to ask"
    )


# --- the configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_mounts_the_configuration_read_only_where_the_image_looks(name: str) -> None:
    mount = _mount_at(SERVICES[name], CONFIG_TARGET)
    assert mount.type == "bind"
    assert mount.read_only, "the configuration mount must be read-only"
    assert _dockerfile_env().get("KARNAK_CONFIG") == CONFIG_TARGET


@pytest.mark.parametrize("name", GATEWAY)
def test_the_mounted_configuration_exists_in_the_repository_and_is_valid(name: str) -> None:
    source = ROOT / _mount_at(SERVICES[name], CONFIG_TARGET).source
    assert source.is_file(), f"{source} does not exist"
    load_config(source)


@pytest.mark.parametrize("name", GATEWAY)
def test_the_configuration_points_at_the_compose_broker_and_the_shared_blob_volume(name: str) -> None:
    service = SERVICES[name]
    config = load_config(ROOT / _mount_at(service, CONFIG_TARGET).source)
    assert urlsplit(config.broker.url.get_secret_value()).hostname in SERVICES
    assert config.blob_store.path == BLOBS_TARGET
    assert config.metrics.host == "0.0.0.0", "bound to loopback, the metrics would not leave the container"
    blobs = _mount_at(service, BLOBS_TARGET)
    assert blobs.type == "volume"
    assert blobs.source in (COMPOSE.get("volumes") or {}), f"volume {blobs.source!r} is not declared"


# --- start-up order, health and scaling ----------------------------------------------------------


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_waits_for_a_healthy_rabbitmq(name: str) -> None:
    depends_on = SERVICES[name].get("depends_on")
    assert isinstance(depends_on, dict), "use the long form of depends_on, with a condition"
    assert depends_on["rabbitmq"]["condition"] == "service_healthy"
    assert SERVICES["rabbitmq"]["healthcheck"]["test"], "service_healthy needs rabbitmq to have a healthcheck"


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_has_a_healthcheck_and_restarts(name: str) -> None:
    service = SERVICES[name]
    assert service["healthcheck"]["test"]
    assert not service["healthcheck"].get("disable", False)
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", SCALABLE)
def test_the_processor_and_the_dicom_sender_can_be_scaled(name: str) -> None:
    # `docker compose up --scale NAME=3` fails on a fixed container name or a published host port.
    assert "container_name" not in SERVICES[name]
    assert "ports" not in SERVICES[name]


def test_docker_compose_yml_follows_the_compose_specification() -> None:
    validator = _compose_spec_validator()
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert not errors, "\n".join(errors)


def test_the_compose_specification_check_catches_a_misspelt_key() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["receiver"]["restat"] = broken["services"]["receiver"].pop("restart")
    assert list(_compose_spec_validator().iter_errors(broken))


def _compose_spec_validator() -> Any:
    # The Compose specification's JSON schema, as vendored by check-jsonschema (no network needed).
    # Imported by name: jsonschema has no type stubs here, and only this test needs it.
    jsonschema = importlib.import_module("jsonschema")
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


# --- the Dockerfile ------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, arguments = logical.partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in _final_stage():
        if keyword == "ENV":
            for part in shlex.split(arguments):
                key, equals, value = part.partition("=")
                if equals:
                    env[key] = value
    return env


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in _final_stage() if keyword == "USER"]
    assert users, "the final stage of the Dockerfile sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]} is root"


def test_the_image_has_a_healthcheck_on_healthz() -> None:
    checks = [arguments for keyword, arguments in _final_stage() if keyword == "HEALTHCHECK"]
    assert checks, "the final stage of the Dockerfile has no HEALTHCHECK"
    assert checks[-1].upper() != "NONE"
    assert "/healthz" in checks[-1]


def test_the_image_builds_every_service_package_of_the_repository() -> None:
    builds = " ".join(arguments for keyword, arguments in _dockerfile_instructions() if keyword == "RUN")
    packages = [p.parent for p in sorted((ROOT / "services").glob("*/pyproject.toml"))]
    assert packages
    for package in [ROOT / "shared", *packages]:
        path = f"./{package.relative_to(ROOT).as_posix()}"
        assert path in builds.split(), f"the Dockerfile does not build {path}"
