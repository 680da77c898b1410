"""The console's must-show, against the running gateway (`karnak up` with the console, RabbitMQ, PostgreSQL).

A script with a token creates a forward node, a DICOM destination (storescp), a de-identifying project
with a generated secret and uploads a profile; then storescu sends a study through the new node and it
arrives de-identified, with nothing restarted. The audit lists each step, and the configuration exported
after the API's changes applies again with no difference.

The delivery part needs the services to apply new revisions while they run (live reload, DESIGN.md
section 14): without it, the receiver does not know the new forward node and refuses the association.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pydicom import dcmread

from karnak_dicom.testing import PATIENT_ID, PATIENT_NAME, StudyFiles, make_study
from karnak_shared.config import parse_config
from karnak_shared.revisions import RevisionStore
from tests.conftest import gateway_config, register_topology
from tests.support.servers import Gateway, StoreSCP, free_port, storescu, wait_until

pytestmark = pytest.mark.e2e

PROFILE = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles" / "profileByDefault.yml"
POSTGRES = "postgresql://postgres@localhost:5432"
SECRETS_KEY = "3c1d5e7f9a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f6a8b0c2d"


@dataclass
class Run:
    gateway: Gateway
    api: httpx.Client
    scp: StoreSCP
    study: StudyFiles
    workdir: Path
    database_url: str


def _console_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"karnak_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES}/{name}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def run(amqp_url: str, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("console")
    prefix = f"karnak-test-console-{free_port()}"
    scp = StoreSCP("PACS_API", free_port(), workdir / "pacs").start()
    config = gateway_config(amqp_url, prefix, workdir, [])
    config["database"] = {"url": database}
    config["secrets"] = {"key": SECRETS_KEY}
    register_topology(amqp_url, parse_config(json.dumps(config)))
    gateway = Gateway(config, workdir)
    study = make_study(workdir / "study", ct=3, mr=0, multiframe=0, large=0, compressed=0)
    try:
        gateway.start(timeout=120)
        port = int(config["console"]["port"])
        wait_until(lambda: _console_ready(port), 60, f"the console on port {port} (see {gateway.log_path})")
        created = gateway.karnak("tokens", "create", "script", "--role", "admin")
        assert created.returncode == 0, created.stderr
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1",
            headers={"Authorization": f"Bearer {created.stdout.strip()}"},
            timeout=30,
        )
        yield Run(gateway, api, scp, study, workdir, database)
    finally:
        gateway.stop()
        scp.stop()


def _ok(answer: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    return body


def expected_pseudonym(secret: str) -> str:
    key = bytes.fromhex(secret.replace("-", ""))
    return hmac.new(key, PATIENT_ID.encode("ascii"), hashlib.sha256).digest()[:8].hex().upper()


@pytest.fixture(scope="module")
def scripted(run: Run) -> dict[str, Any]:
    """The script: forward node, profile, project with a generated secret, de-identifying destination."""
    api = run.api
    steps: dict[str, Any] = {}
    steps["node"] = _ok(api.post("/forward-nodes", json={"ae_title": "KARNAK-API", "sources": [{"ae_title": "CT01"}]}))
    steps["profile"] = _ok(
        api.post("/profiles?name=research", content=PROFILE.read_text(), headers={"content-type": "application/x-yaml"})
    )
    steps["project"] = _ok(api.post("/projects", json={"name": "research", "profile": "research"}))
    destination = {
        "id": "api-pacs",
        "type": "dicom",
        "ae_title": "PACS_API",
        "hostname": "127.0.0.1",
        "port": run.scp.port,
        "deidentification": {"project": "research"},
    }
    steps["destination"] = _ok(api.post("/forward-nodes/KARNAK-API/destinations", json=destination))
    return steps


def test_each_scripted_step_stores_one_revision(scripted: dict[str, Any]) -> None:
    numbers = [scripted[step]["revision"] for step in ("node", "profile", "project", "destination")]
    assert numbers == list(range(numbers[0], numbers[0] + 4))
    assert len(scripted["project"]["secret"]) == 32


def test_the_audit_lists_each_step_of_the_script(run: Run, scripted: dict[str, Any]) -> None:
    entries = _ok(run.api.get("/audit", params={"actor": "token:script"}), 200)
    assert [(e["action"], e["object"], e["origin"]) for e in reversed(entries)] == [  # type: ignore[call-overload]
        ("create", "forward-nodes/KARNAK-API", "api"),
        ("create", "profiles/research", "api"),
        ("create", "projects/research", "api"),
        ("create", "forward-nodes/KARNAK-API/destinations/api-pacs", "api"),
    ]
    assert scripted["project"]["secret"] not in json.dumps(entries)


def test_every_service_reports_the_new_revision_without_a_restart(run: Run, scripted: dict[str, Any]) -> None:
    wanted = scripted["destination"]["revision"]

    def all_on_it() -> bool:
        services = run.api.get("/services").json()
        running = {i["service"] for i in services["instances"] if i["revision"] == wanted and not i["stale"]}
        return {"receiver", "processor", "dicom-sender"} <= running

    wait_until(all_on_it, 60, f"receiver, processor and dicom-sender running revision {wanted} (GET /services)")


def test_a_study_sent_through_the_new_node_arrives_deidentified(run: Run, scripted: dict[str, Any]) -> None:
    sent = storescu(run.gateway.listener_port, "KARNAK-API", "CT01", run.study.paths)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: len(run.scp.files()) >= len(run.study.paths), 90, "the study at the API's destination")
    pseudonym = expected_pseudonym(scripted["project"]["secret"])
    for path in run.scp.files():
        dataset = dcmread(path)
        assert dataset.PatientID != PATIENT_ID
        assert str(dataset.PatientName) == pseudonym
        assert PATIENT_NAME not in str(dataset.PatientName)


def test_the_exported_configuration_applies_again_with_no_difference(run: Run, scripted: dict[str, Any]) -> None:
    store = RevisionStore.open(run.gateway.config_path)
    try:
        latest = store.latest()
        assert latest is not None and latest.number == scripted["destination"]["revision"]
        exported = run.workdir / "exported.yml"
        exported.write_text(store.export(latest))
        result = store.apply(store.read_document(exported), author="test", origin="apply", dry_run=True)
        assert result.changes == []
    finally:
        store.close()
