"""docker-compose.yml and the Dockerfile, checked without Docker: every gateway service runs a `karnak`
command that exists, with an environment and a configuration that it accepts, its secrets mounted, and can
be scaled where it should; the demo and monitoring profiles are wired to what they show."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from karnak_shared.cli import build_parser, services
from karnak_shared.config import GatewayConfig, parse_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
MAKE_SECRETS = ROOT / "deploy" / "compose" / "make-secrets.sh"
CONFIG_TARGET = "/etc/karnak/karnak.yml"
BLOBS_TARGET = "/var/lib/karnak/blobs"
SECRETS_DIR = "/run/secrets/"
SCALABLE = ("processor", "dicom-sender", "stow-sender")
DICOM_LISTENER = 11112


def declared_services() -> dict[str, Path]:
    """Every service of the repository, by its `karnak.services` entry point name, from services/*/pyproject.toml.

    Read from the sources, not from the installed packages: a service still being written is deployed too.
    """
    declared: dict[str, Path] = {}
    for pyproject in sorted((ROOT / "services").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        for name in project.get("entry-points", {}).get("karnak.services", {}):
            declared[name] = pyproject.parent
    return declared


def service_directories() -> list[Path]:
    return sorted(path for path in (ROOT / "services").iterdir() if path.is_dir() and not path.name.startswith("."))


def _load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must be a mapping"
    return document


COMPOSE = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The one-shot that declares the topology and creates the broker users (tests/deploy/test_compose_broker_users.py).
BROKER_SETUP = "broker-setup"
# The gateway's own services are the ones built from this repository's Dockerfile (but the one-shot).
GATEWAY = sorted(name for name, service in SERVICES.items() if "build" in service and name != BROKER_SETUP)
INSTALLED = sorted(set(GATEWAY) & set(services()))


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


def _secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """Secret name -> path in the container (compose's default: /run/secrets/<name>)."""
    targets = {}
    for secret in service.get("secrets", []):
        if isinstance(secret, str):
            targets[secret] = SECRETS_DIR + secret
        else:
            target = secret.get("target", secret["source"])
            targets[secret["source"]] = target if target.startswith("/") else SECRETS_DIR + target
    return targets


def _published(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, container port) of each published port ("" for every address)."""
    published = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.append((str(port.get("host_ip", "")), int(port["target"])))
            continue
        parts = str(port).split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        published.append((host_ip, int(parts[-1].split("/")[0])))
    return published


# --- the configuration, with the secrets that make-secrets.sh writes ---------------------------------

CONFIG_FILE = ROOT / _mount_at(SERVICES[GATEWAY[0]], CONFIG_TARGET).source
CONFIG_TEXT = CONFIG_FILE.read_text(encoding="utf-8")


def _strings(value: Any) -> list[str]:
    """Every string value of a parsed YAML document (comments are not values)."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def references(text: str) -> tuple[list[str], list[str]]:
    """The `${file:PATH}` paths and the `${VARIABLE}` names that a configuration file reads."""
    values = " ".join(_strings(yaml.safe_load(text)))
    files = sorted(set(re.findall(r"\$\{file:([^}]*)\}", values)))
    variables = sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", values)))
    return files, variables


FILE_REFERENCES, VARIABLE_REFERENCES = references(CONFIG_TEXT)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secrets as deploy/compose/make-secrets.sh writes them, in a directory of the test."""
    directory = tmp_path_factory.mktemp("secrets") / "secrets"
    result = subprocess.run(["sh", str(MAKE_SECRETS), str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return directory


def service_config(name: str, secrets_dir: Path) -> GatewayConfig:
    """The compose configuration as service `name` reads it: its own environment and secret files.

    A `${file:/run/secrets/T}` reads the file of the secret the service mounts at T (as make-secrets.sh
    wrote it); a `${VARIABLE}` the service's environment (a variable it lacks stays, and fails).
    """
    service = SERVICES[name]
    text = CONFIG_TEXT
    for secret, target in _secret_targets(service).items():
        source = ROOT / COMPOSE["secrets"][secret]["file"]
        text = text.replace("${file:" + target + "}", "${file:" + str(secrets_dir / source.name) + "}")
    for variable, value in _environment(service).items():
        text = text.replace("${" + variable + "}", value)
    return parse_config(text, str(CONFIG_FILE))


@pytest.fixture(scope="module")
def config(secrets_dir: Path) -> GatewayConfig:
    """The compose configuration as the receiver reads it (the others differ in their broker user only)."""
    return service_config("receiver", secrets_dir)


# --- which services run ------------------------------------------------------------------------------


def test_the_gateway_services_include_the_receiver_the_processor_and_the_senders() -> None:
    assert {"receiver", "processor", "dicom-sender", "stow-sender"} <= set(GATEWAY)


def test_compose_runs_every_service_of_the_repository_and_no_other() -> None:
    declared = declared_services()
    assert len(declared) == len(service_directories()), "each directory under services/ declares one service"
    assert set(GATEWAY) == set(declared), f"compose runs {GATEWAY}, services/ declares {sorted(declared)}"


def test_every_installed_service_runs_in_compose() -> None:
    assert set(services()) <= set(GATEWAY)


def test_every_service_of_the_repository_is_installed_for_these_tests() -> None:
    missing = sorted(set(declared_services()) - set(services()))
    hint = " ".join(f"-e ./{declared_services()[name].relative_to(ROOT)}" for name in missing)
    assert not missing, f"not installed, so not checked against its package: {missing}; `.venv/bin/pip install {hint}`"


# --- the commands and the environment ----------------------------------------------------------------


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_runs_karnak_run_with_its_own_name(name: str) -> None:
    command = _command(SERVICES[name])
    assert command[:3] == ["karnak", "run", name]


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
def test_each_metrics_port_is_the_one_the_configuration_gives_its_service(name: str, config: GatewayConfig) -> None:
    assert _metrics_port(SERVICES[name]) == config.metrics.ports.get(name)


def test_no_two_services_share_a_metrics_port() -> None:
    ports = [_metrics_port(SERVICES[name]) for name in GATEWAY]
    assert len(set(ports)) == len(ports)


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


def check_environment(name: str, environment: dict[str, str], config: GatewayConfig, variables: list[str]) -> None:
    """Fail unless the service reads every variable of `environment` and accepts its value.

    It reads KARNAK_CONFIG, KARNAK_METRICS_PORT, the variables its configuration names (`variables`) and,
    when its package has a settings module with an ENV_PREFIX, one variable per setting.
    """
    accepted = {"KARNAK_CONFIG", "KARNAK_METRICS_PORT", *variables}
    try:
        module: Any = importlib.import_module(f"karnak_{name.replace('-', '_')}.settings")
    except ModuleNotFoundError:
        module = None
    prefix = getattr(module, "ENV_PREFIX", None)
    if prefix is not None:
        model = typing.get_type_hints(module.load_settings)["return"]
        accepted |= {prefix + field.upper() for field in model.model_fields}
    unknown = sorted(set(environment) - accepted)
    assert not unknown, f"{name} reads no variable {unknown}; it reads {sorted(accepted)}"
    if environment.get("KARNAK_CONFIG"):
        assert environment["KARNAK_CONFIG"] == CONFIG_TARGET
    if prefix is not None:
        module.load_settings(config, environ=environment)  # raises ConfigError naming a bad value


@pytest.mark.parametrize("name", INSTALLED)
def test_each_environment_variable_is_one_the_service_reads_with_a_value_it_accepts(
    name: str, config: GatewayConfig
) -> None:
    check_environment(name, _environment(SERVICES[name]), config, VARIABLE_REFERENCES)


# --- the configuration and the secrets --------------------------------------------------------------


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_mounts_the_configuration_read_only_where_the_image_looks(name: str) -> None:
    mount = _mount_at(SERVICES[name], CONFIG_TARGET)
    assert mount.type == "bind"
    assert mount.read_only, "the configuration mount must be read-only"
    assert (ROOT / mount.source) == CONFIG_FILE, "every service reads the same file"
    assert _dockerfile_env().get("KARNAK_CONFIG") == CONFIG_TARGET


def test_the_configuration_names_its_secrets_as_files_only(config: GatewayConfig) -> None:
    assert FILE_REFERENCES, "the broker and database passwords come from secret files"
    assert all(path.startswith(SECRETS_DIR) for path in FILE_REFERENCES)
    assert "guest" not in config.broker.url.get_secret_value()


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_mounts_every_secret_file_that_the_configuration_reads(name: str) -> None:
    mounted = set(_secret_targets(SERVICES[name]).values())
    missing = sorted(set(FILE_REFERENCES) - mounted)
    assert not missing, f"{name} reads the whole configuration but lacks the secrets {missing}"


def test_every_secret_comes_from_a_file_that_make_secrets_writes(secrets_dir: Path) -> None:
    declared = COMPOSE["secrets"]
    for name, secret in declared.items():
        source = ROOT / secret["file"]
        assert source.parent == MAKE_SECRETS.parent / "secrets", f"secret {name} is not in deploy/compose/secrets"
        assert (secrets_dir / source.name).is_file(), f"make-secrets.sh does not write {source.name}"
    used = {name for service in SERVICES.values() for name in _secret_targets(service)}
    assert used <= set(declared), f"undeclared secrets: {sorted(used - set(declared))}"


def test_generated_secret_files_are_readable_by_the_containers_but_the_directory_is_private(
    secrets_dir: Path,
) -> None:
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    for path in secrets_dir.iterdir():
        assert path.stat().st_mode & 0o444 == 0o444, f"{path.name}: the services run as other users than yours"


def test_make_secrets_keeps_existing_secrets(secrets_dir: Path) -> None:
    before = {path.name: path.read_text() for path in secrets_dir.iterdir()}
    subprocess.run(["sh", str(MAKE_SECRETS), str(secrets_dir)], check=True, capture_output=True, timeout=60)
    assert {path.name: path.read_text() for path in secrets_dir.iterdir()} == before


def test_rabbitmq_creates_the_administrator_that_the_broker_setup_connects_with(secrets_dir: Path) -> None:
    rabbitmq = SERVICES["rabbitmq"]
    credentials = {target: name for name, target in _secret_targets(rabbitmq).items()}
    conf_d = [target for target in credentials if target.startswith("/etc/rabbitmq/conf.d/")]
    assert len(conf_d) == 1, "RabbitMQ reads default_user/default_pass from a conf.d file"
    settings = dict(
        line.split(" = ", 1) for line in (secrets_dir / credentials[conf_d[0]]).read_text().splitlines() if line
    )
    url = urlsplit(service_config(BROKER_SETUP, secrets_dir).broker.url.get_secret_value())
    assert url.hostname == "rabbitmq" and url.port == 5672
    assert (url.username, url.password) == (settings["default_user"], settings["default_pass"])


def test_postgres_creates_the_user_database_and_password_that_the_gateway_connects_with(
    config: GatewayConfig, secrets_dir: Path
) -> None:
    postgres = SERVICES["postgres"]
    environment = _environment(postgres)
    url = urlsplit(config.database.url.get_secret_value())
    assert url.scheme.startswith("postgresql")
    assert url.hostname == "postgres" and url.port == 5432
    assert url.username == environment["POSTGRES_USER"]
    assert url.path.lstrip("/") == environment["POSTGRES_DB"]
    password_file = environment["POSTGRES_PASSWORD_FILE"]
    secret = {target: name for name, target in _secret_targets(postgres).items()}[password_file]
    assert url.password == (secrets_dir / secret).read_text().strip()


def test_the_configuration_points_at_the_shared_blob_volume_and_listens_beyond_loopback(config: GatewayConfig) -> None:
    assert config.blob_store.path == BLOBS_TARGET
    assert config.metrics.host == "0.0.0.0", "bound to loopback, the metrics would not leave the container"
    assert config.listener.port == DICOM_LISTENER


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_mounts_the_blob_volume(name: str) -> None:
    blobs = _mount_at(SERVICES[name], BLOBS_TARGET)
    assert blobs.type == "volume"
    assert blobs.source in (COMPOSE.get("volumes") or {}), f"volume {blobs.source!r} is not declared"


# --- start-up order, health, hardening and scaling ------------------------------------------------------


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_waits_for_a_healthy_rabbitmq_and_postgresql(name: str) -> None:
    depends_on = SERVICES[name].get("depends_on")
    assert isinstance(depends_on, dict), "use the long form of depends_on, with a condition"
    for server in ("rabbitmq", "postgres"):
        assert depends_on[server]["condition"] == "service_healthy"
        assert SERVICES[server]["healthcheck"]["test"], f"service_healthy needs {server} to have a healthcheck"


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_service_has_a_healthcheck_and_restarts(name: str) -> None:
    service = SERVICES[name]
    assert service["healthcheck"]["test"]
    assert not service["healthcheck"].get("disable", False)
    assert service.get("restart") == "unless-stopped"


@pytest.mark.parametrize("name", GATEWAY)
def test_each_gateway_container_is_read_only_without_capabilities(name: str) -> None:
    service = SERVICES[name]
    assert service.get("read_only") is True
    assert service.get("cap_drop") == ["ALL"]
    assert "/tmp" in service.get("tmpfs", [])


@pytest.mark.parametrize("name", SCALABLE)
def test_the_processor_and_the_senders_can_be_scaled(name: str) -> None:
    # `docker compose up --scale NAME=3` fails on a fixed container name or a published host port.
    assert "container_name" not in SERVICES[name]
    assert "ports" not in SERVICES[name]


def test_only_the_dicom_listener_is_published_beyond_loopback() -> None:
    for name, service in SERVICES.items():
        for host_ip, port in _published(service):
            if (name, port) != ("receiver", DICOM_LISTENER):
                assert host_ip == "127.0.0.1", f"{name} publishes {port} on every address"
    assert ("", DICOM_LISTENER) in _published(SERVICES["receiver"])


# --- profiles -----------------------------------------------------------------------------------------


def test_the_gateway_rabbitmq_and_postgresql_run_without_a_profile() -> None:
    for name in [*GATEWAY, "rabbitmq", "postgres"]:
        assert not SERVICES[name].get("profiles"), f"{name} must start with a plain `docker compose up`"


def test_the_demo_profile_is_an_orthanc_that_the_configuration_sends_to(config: GatewayConfig) -> None:
    demo = [name for name, service in SERVICES.items() if "demo" in service.get("profiles", [])]
    assert len(demo) == 1
    orthanc = SERVICES[demo[0]]
    assert orthanc["image"].split(":")[0] in ("orthancteam/orthanc", "jodogne/orthanc-plugins")
    environment = _environment(orthanc)
    destinations = [d for _, d in config.destinations() if getattr(d, "hostname", None) == demo[0]]
    assert destinations, "no destination of config/karnak.compose.yml sends to the demo Orthanc"
    assert destinations[0].port == int(environment["ORTHANC__DICOM_PORT"])
    assert destinations[0].ae_title == environment["ORTHANC__DICOM_AET"]
    assert ("127.0.0.1", 8042) in _published(orthanc), "the demo user looks at Orthanc Explorer"


def test_the_monitoring_profile_is_prometheus_and_grafana() -> None:
    monitoring = sorted(name for name, service in SERVICES.items() if "monitoring" in service.get("profiles", []))
    assert monitoring == ["grafana", "prometheus"]


def test_no_service_that_always_runs_depends_on_one_of_a_profile() -> None:
    # `docker compose up` without the profile would fail on the missing dependency.
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            if not service.get("profiles"):
                assert not SERVICES[dependency].get("profiles"), f"{name} depends on {dependency} of a profile"


def test_prometheus_loads_the_repository_configuration_and_rules() -> None:
    prometheus = SERVICES["prometheus"]
    mount = _mount_at(prometheus, "/etc/prometheus")
    assert mount.read_only and (ROOT / mount.source) == ROOT / "deploy" / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["rules.yml"]


def test_prometheus_scrapes_every_replica_of_every_gateway_service_on_its_metrics_port() -> None:
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    karnak = next(job for job in scrape["scrape_configs"] if job["job_name"] == "karnak")
    discovered = {name: sd["port"] for sd in karnak["dns_sd_configs"] for name in sd["names"]}
    assert discovered == {name: _metrics_port(SERVICES[name]) for name in GATEWAY}
    relabel = karnak["relabel_configs"]
    assert {"source_labels": ["__meta_dns_name"], "target_label": "component"} in relabel


def test_prometheus_scrapes_rabbitmqs_prometheus_plugin_with_one_series_per_queue() -> None:
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    rabbitmq = next(job for job in scrape["scrape_configs"] if job["job_name"] == "rabbitmq")
    assert rabbitmq["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    configs = {
        entry["target"]: COMPOSE["configs"][entry["source"]]["file"] for entry in SERVICES["rabbitmq"]["configs"]
    }
    plugins = (ROOT / configs["/etc/rabbitmq/enabled_plugins"]).read_text()
    assert {"rabbitmq_prometheus", "rabbitmq_management"} <= set(re.findall(r"rabbitmq_\w+", plugins))
    conf = [ROOT / path for target, path in configs.items() if target.startswith("/etc/rabbitmq/conf.d/")]
    settings = "\n".join(path.read_text() for path in conf)
    assert re.search(r"^prometheus\.return_per_object_metrics\s*=\s*true$", settings, re.MULTILINE)


def test_grafana_is_provisioned_with_the_prometheus_of_compose_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    provisioning = _mount_at(grafana, "/etc/grafana/provisioning")
    assert (ROOT / provisioning.source) == ROOT / "deploy/grafana/provisioning"
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlsplit(datasources["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/karnak.yml").read_text())
    dashboards = _mount_at(grafana, providers["providers"][0]["options"]["path"])
    assert (ROOT / dashboards.source / "karnak.json").is_file()
    assert _environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"] in _secret_targets(grafana).values()


# --- the Compose specification ----------------------------------------------------------------------


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
    libraries = [p.parent for p in sorted((ROOT / "libs").glob("*/pyproject.toml"))]
    assert packages and libraries
    for package in [*libraries, ROOT / "shared", *packages]:
        path = f"./{package.relative_to(ROOT).as_posix()}"
        assert path in builds.split(), f"the Dockerfile does not build {path}"


def test_the_image_build_fails_when_a_service_is_missing_from_it() -> None:
    builds = " ".join(arguments for keyword, arguments in _dockerfile_instructions() if keyword == "RUN")
    checked = re.search(r"missing = \{([^}]*)\} - set\(services\(\)\)", builds)
    assert checked, "the Dockerfile checks the services installed in the image"
    assert set(re.findall(r"'([a-z-]+)'", checked.group(1))) == set(declared_services())


def test_the_image_exposes_every_port_the_services_listen_on() -> None:
    exposed = {int(port) for keyword, arguments in _final_stage() if keyword == "EXPOSE" for port in arguments.split()}
    assert {DICOM_LISTENER, *(_metrics_port(SERVICES[name]) for name in GATEWAY)} <= exposed
