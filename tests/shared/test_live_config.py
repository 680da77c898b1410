"""`listen_config()` against real RabbitMQ and the revision store (SQLite): announcements, the periodic
check, a revision that cannot be applied, status reports and `karnak status`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from karnak_shared.config import GatewayConfig
from karnak_shared.errors import ConfigError
from karnak_shared.revisions import RevisionStore
from karnak_shared.service.live_config import ConfigListener, StoreRevisions
from karnak_shared.service.status import InstanceStatus
from tests.support.revisions import routing, settings, write_yaml
from tests.support.servers import wait_until


class Applied:
    """What the service was asked to run: the configurations it accepted, and a cause to refuse one."""

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self.ports: list[int] = []
        self.refuse: str | None = None
        self._lock = threading.Lock()

    def __call__(self, config: GatewayConfig, revision: int) -> None:
        if self.refuse is not None:
            raise ConfigError(self.refuse)
        with self._lock:
            self.revisions.append(revision)
            port = config.destination("pacs-a")
            assert port is not None and port.type == "dicom"
            self.ports.append(port.port)


@pytest.fixture
def settings_file(tmp_path: Path, amqp_url: str, prefix: str) -> Path:
    values = settings(f"sqlite:///{tmp_path / 'karnak.db'}", broker={"url": amqp_url, "prefix": prefix})
    return write_yaml(tmp_path / "karnak.yml", {**values, **routing()})


@pytest.fixture
def store(settings_file: Path) -> Iterator[RevisionStore]:
    store = RevisionStore.open(settings_file)
    yield store
    store.close()


def _listener(settings_file: Path, applied: Applied, **intervals: float) -> ConfigListener:
    revisions = StoreRevisions.open(settings_file)
    config = revisions.config(revisions.current().number)
    return ConfigListener(
        "processor",
        broker_url=config.broker.url.get_secret_value(),
        prefix=config.broker.prefix,
        revisions=revisions,
        apply=applied,
        status=InstanceStatus("processor"),
        ready=lambda: True,
        broker_connected=lambda: True,
        **intervals,
    )


def _store_port(store: RevisionStore, tmp_path: Path, port: int, notify: bool = True) -> int:
    document = store.read_document(write_yaml(tmp_path / f"routing-{port}.yml", routing(port=port)))
    result = store.apply(document, author="test", origin="apply")
    assert result.revision is not None
    if notify:
        store.notify(result.revision)
    return result.number


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "processor"}) or 0.0


def test_an_announced_revision_is_applied_within_seconds(
    settings_file: Path, store: RevisionStore, tmp_path: Path
) -> None:
    applied = Applied()
    listener = _listener(settings_file, applied).start()  # the periodic check is 30 s away: only the fanout helps
    try:
        wait_until(lambda: applied.revisions == [1], 10, "the bootstrap revision applied at start")
        wait_until(lambda: listener.control.connected, 10, "the control connection up")
        second = _store_port(store, tmp_path, 11200)
        wait_until(lambda: applied.revisions == [1, second], 5, f"revision {second} applied: {applied.revisions}")
        assert applied.ports == [11113, 11200]
        assert _sample("karnak_config_revision") == second
    finally:
        listener.stop()


def test_a_missed_announcement_is_made_up_for_by_the_periodic_check(
    settings_file: Path, store: RevisionStore, tmp_path: Path
) -> None:
    applied = Applied()
    listener = _listener(settings_file, applied, check_interval=1.0).start()
    try:
        wait_until(lambda: applied.revisions == [1], 10, "the bootstrap revision applied")
        second = _store_port(store, tmp_path, 11201, notify=False)
        wait_until(lambda: applied.revisions == [1, second], 5, "the stored revision found by the check")
    finally:
        listener.stop()


def test_a_revision_the_service_cannot_apply_leaves_it_on_the_previous_one_and_is_retried(
    settings_file: Path, store: RevisionStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    applied = Applied()
    listener = _listener(settings_file, applied, check_interval=1.0).start()
    try:
        wait_until(lambda: applied.revisions == [1], 10, "the bootstrap revision applied")
        failures = _sample("karnak_config_apply_failures_total")
        applied.refuse = "projects[0].profile: cannot read /profiles/gone.yml (No such file or directory)"
        second = _store_port(store, tmp_path, 11202)
        wait_until(lambda: _sample("karnak_config_apply_failures_total") >= failures + 2, 10, "two failed tries")
        assert listener.revision == 1 and applied.revisions == [1]
        assert _sample("karnak_config_revision") == 1
        lines = [r for r in caplog.records if r.getMessage() == "config.apply-failed"]
        assert len(lines) == 1, "the same failure is logged once, not at every retry"
        assert lines[0].fields["revision"] == second and lines[0].fields["running"] == 1  # type: ignore[attr-defined]
        assert "cannot read /profiles/gone.yml" in lines[0].fields["reason"]  # type: ignore[attr-defined]
        report = listener._status.report(ready=True, broker_connected=True)
        assert report.revision == 1 and report.last_error is not None and "gone.yml" in report.last_error

        applied.refuse = None  # the profile is back
        wait_until(lambda: applied.revisions == [1, second], 5, "the revision applied at the next check")
        assert listener._status.report(ready=True, broker_connected=True).last_error is None
    finally:
        listener.stop()


def _karnak_status(settings_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # As an operator runs it in database mode: the file has the settings and no routing.
    settings_only = settings_file.with_name("settings-only.yml")
    data = yaml.safe_load(settings_file.read_text())
    write_yaml(settings_only, {key: value for key, value in data.items() if key not in ("forward_nodes", "projects")})
    command = [str(Path(sys.executable).with_name("karnak")), "status", "--config", str(settings_only), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_karnak_status_lists_each_running_instance_with_its_revision(
    settings_file: Path, store: RevisionStore, tmp_path: Path
) -> None:
    applied = Applied()
    first, second = _listener(settings_file, applied), _listener(settings_file, applied)
    first.start()
    second.start()
    try:
        wait_until(lambda: applied.revisions == [1, 1], 10, "both instances on revision 1")
        result = _karnak_status(settings_file, "--json", "--wait", "1")
        assert result.returncode == 0, result.stderr
        reports: list[dict[str, Any]] = json.loads(result.stdout)
        assert len(reports) == 2 and {r["instance_id"] for r in reports} == {
            first._status.instance_id,
            second._status.instance_id,
        }
        for report in reports:
            assert report["service"] == "processor" and report["revision"] == 1 and report["ready"] is True
            assert report["broker_connected"] is True and report["last_seen_seconds"] < 5
            assert {"host", "pid", "version", "started_at", "last_error"} <= set(report)

        table = _karnak_status(settings_file, "--wait", "1")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert header.split()[:6] == ["SERVICE", "HOST", "PID", "REVISION", "READY", "LAST"]
        assert len(rows) == 2 and all(row.split()[0] == "processor" and row.split()[3] == "1" for row in rows)
    finally:
        first.stop()
        second.stop()
    wait_until(lambda: _karnak_status(settings_file, "--wait", "1").returncode == 1, 30, "no instance left")
    assert "no service instance answered" in _karnak_status(settings_file, "--wait", "0.5").stderr
