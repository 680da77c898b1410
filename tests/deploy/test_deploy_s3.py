"""The S3 options of the deployments, checked offline: compose's docker-compose.s3.yml and Kubernetes'
overlays/s3. Each keeps its configuration line for line the same as the one it replaces but for the
blob store, reads its keys from files that are mounted, and needs no shared volume on Kubernetes."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_compose import _compose_spec_validator, references
from tests.deploy.test_deploy_kubernetes import (
    CUSTOM_KINDS,
    KUBERNETES_DIR,
    KUBERNETES_VERSIONS,
    config_text,
    deployment,
    load_with_stand_in_secrets,
    named,
    of_kind,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
S3_OVERLAY = yaml.safe_load((ROOT / "docker-compose.s3.yml").read_text(encoding="utf-8"))
GATEWAY_SERVICES = [name for name, service in COMPOSE["services"].items() if "karnak" in str(service.get("command"))]


def without_blob_store(text: str) -> dict[str, Any]:
    document = yaml.safe_load(text)
    document.pop("blob_store")
    return dict(document)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`docker compose -f base -f override` for what these tests look at (Compose's merge rules)."""
    result = copy.deepcopy(base)
    for name, service in override["services"].items():
        into = result["services"].setdefault(name, {})
        for key, value in service.items():
            if key == "volumes":  # merged by target
                kept = [v for v in into.get("volumes", []) if v["target"] not in {m["target"] for m in value}]
                into["volumes"] = kept + value
            elif key == "secrets":
                into["secrets"] = into.get("secrets", []) + [s for s in value if s not in into.get("secrets", [])]
            elif isinstance(value, dict):
                into[key] = {**into.get(key, {}), **value}
            else:
                into[key] = value
    for section in ("secrets", "volumes"):
        result.setdefault(section, {}).update(override.get(section) or {})
    return result


MERGED = merged(COMPOSE, S3_OVERLAY)


# --- compose ----------------------------------------------------------------------------------------------


def test_the_s3_override_and_the_merged_project_follow_the_compose_specification() -> None:
    validator = _compose_spec_validator()
    for document in (S3_OVERLAY, MERGED):
        problems = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not problems, problems


def test_the_s3_override_covers_every_gateway_service() -> None:
    assert set(GATEWAY_SERVICES) <= set(S3_OVERLAY["services"])


@pytest.mark.parametrize("name", GATEWAY_SERVICES)
def test_each_gateway_service_reads_the_s3_configuration_and_its_keys_and_waits_for_the_s3_server(name: str) -> None:
    service = MERGED["services"][name]
    (mount,) = [v for v in service["volumes"] if v["target"] == "/etc/karnak/karnak.yml"]
    assert mount["source"] == "./config/karnak.compose-s3.yml" and mount["read_only"]
    files, _ = references((ROOT / "config" / "karnak.compose-s3.yml").read_text(encoding="utf-8"))
    mounted = {f"/run/secrets/{s if isinstance(s, str) else s['target']}" for s in service["secrets"]}
    assert set(files) <= mounted, f"{name}: {set(files) - mounted} not mounted"
    assert service["depends_on"]["minio"]["condition"] == "service_healthy"
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"  # the base's, kept


def test_the_s3_configuration_is_the_compose_one_but_for_its_blob_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_text = (ROOT / "config" / "karnak.compose-s3.yml").read_text(encoding="utf-8")
    base_text = (ROOT / "config" / "karnak.compose.yml").read_text(encoding="utf-8")
    assert without_blob_store(s3_text) == without_blob_store(base_text)
    # Each compose service names its broker user in its environment (docker-compose.yml); one of them here.
    monkeypatch.setenv("KARNAK_BROKER_USER", "karnak-receiver")

    config = load_with_stand_in_secrets(s3_text, tmp_path)

    store = config.blob_store
    assert store.url == "s3://karnak/blobs" and store.endpoint_url == "http://minio:9000"
    assert store.access_key_id is not None and store.secret_access_key is not None


def test_minio_makes_its_user_from_the_same_files_the_gateway_reads() -> None:
    minio = S3_OVERLAY["services"]["minio"]
    environment = minio["environment"]
    files, _ = references((ROOT / "config" / "karnak.compose-s3.yml").read_text(encoding="utf-8"))
    assert {
        f"/run/secrets/{environment['MINIO_ROOT_USER_FILE']}",
        f"/run/secrets/{environment['MINIO_ROOT_PASSWORD_FILE']}",
    } == {f for f in files if "/s3-" in f}
    assert set(minio["secrets"]) == {"s3-access-key-id", "s3-secret-access-key"}
    assert minio["healthcheck"]["test"]
    assert "ports" not in minio, "the bucket is reached inside the compose network only"


# --- Kubernetes: overlays/s3 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> list[dict[str, Any]]:
    return render(KUBERNETES_DIR / "overlays" / "s3")


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(KUBERNETES_DIR / "base")


def test_the_s3_overlay_needs_no_volume_claim_at_all(s3: list[dict[str, Any]]) -> None:
    assert of_kind(s3, "PersistentVolumeClaim") == []
    for obj in of_kind(s3, "Deployment") + [j["spec"]["jobTemplate"] for j in of_kind(s3, "CronJob")]:
        volumes = obj["spec"]["template"]["spec"]["volumes"]
        assert not [v for v in volumes if "persistentVolumeClaim" in v], obj["metadata"].get("name")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_of_the_s3_overlay_validates_against_the_kubernetes_schemas(
    version: str, s3: list[dict[str, Any]]
) -> None:
    kubernetes_validate = importlib.import_module("kubernetes_validate")
    problems = []
    for obj in s3:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_the_overlays_configuration_is_the_bases_but_for_its_blob_store(
    s3: list[dict[str, Any]], base: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert without_blob_store(config_text(s3)) == without_blob_store(config_text(base))

    config = load_with_stand_in_secrets(config_text(s3), tmp_path)

    assert config.blob_store.url is not None and config.blob_store.url.startswith("s3://")


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in of_kind(objects, "Deployment")}
    for job in of_kind(objects, "CronJob"):
        pods[job["metadata"]["name"]] = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pods


def test_every_pod_mounts_each_secret_file_the_configuration_reads_and_no_blob_directory(
    s3: list[dict[str, Any]],
) -> None:
    files, variables = references(config_text(s3))
    assert not variables
    (configmap,) = of_kind(s3, "ConfigMap")
    for name, pod in _pod_specs(s3).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        (only,) = pod["containers"]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in only["volumeMounts"]}
        assert mounts["/etc/karnak"]["configMap"]["name"] == configmap["metadata"]["name"], name
        assert "/var/lib/karnak/blobs" not in mounts, name
        for path in files:
            directory, _, file = path.rpartition("/")
            assert directory in mounts, f"{name}: nothing mounted at {directory} for {path}"
            volume = mounts[directory]
            sources = volume.get("projected", {}).get("sources", []) + ([volume] if "secret" in volume else [])
            items = [item["path"] for s in sources for item in (s["secret"].get("items") or [])]
            assert file in items, f"{name}: {path} is in no Secret mounted at {directory}"


def test_the_sweep_runs_daily_one_at_a_time_with_the_gateways_image(s3: list[dict[str, Any]]) -> None:
    job = named(s3, "CronJob", "karnak-blobs-sweep")
    (only,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]

    assert only["command"][:3] == ["karnak", "blobs", "sweep"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert job["spec"]["schedule"].split()[2:] == ["*", "*", "*"] and "*" not in job["spec"]["schedule"].split()[:2]
    assert only["image"] == deployment(s3, "processor")["spec"]["template"]["spec"]["containers"][0]["image"]
    from karnak_shared.cli import build_parser

    build_parser().parse_args(only["command"][1:])  # a command the CLI has, with options it accepts


def test_the_dicom_sender_has_room_in_tmp_for_a_large_instance_streamed_from_the_bucket(
    s3: list[dict[str, Any]],
) -> None:
    volumes = {v["name"]: v for v in deployment(s3, "dicom-sender")["spec"]["template"]["spec"]["volumes"]}

    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "2Gi"  # a 300 MB instance and more, one per destination
