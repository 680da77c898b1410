"""`karnak config apply|export|history|diff|rollback|check` as an operator runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_shared.revisions import RevisionStore
from tests.conftest import register_topology
from tests.support.revisions import SECRET, routing, settings, write_yaml

# No broker listens here: these tests are about revisions, not about telling services (see the notify test).
NO_BROKER = {"broker": {"url": "amqp://guest:guest@127.0.0.1:9/"}}


def karnak(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("karnak")), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def start_karnak(*args: str | Path) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).with_name("karnak")), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def settings_file(tmp_path: Path, db_url: str) -> Path:
    """Service settings alone (database mode), as a gateway has them after its bootstrap."""
    return write_yaml(tmp_path / "settings.yml", {**settings(db_url), **NO_BROKER})


def routing_file(folder: Path, name: str, **changes: Any) -> Path:
    return write_yaml(folder / name, routing(**changes))


def test_apply_prints_the_diff_and_stores_a_revision(settings_file: Path, tmp_path: Path) -> None:
    first = ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    assert "+ forward_nodes[KARNAK-GW]: " in first
    assert "stored revision 1 (based on revision 0" in first
    second = karnak("config", "apply", routing_file(tmp_path, "b.yml", port=11200), "--config", settings_file)
    assert ok(second).splitlines()[0] == "~ forward_nodes[KARNAK-GW].destinations[pacs-a].port: 11113 -> 11200"
    assert "stored revision 2 (based on revision 1" in second.stdout
    # The broker is down: the revision is stored all the same and the services find it at their next check.
    assert "revision 2 is stored but the services were not told" in second.stderr
    history = ok(karnak("config", "history", "--config", settings_file)).splitlines()
    assert [line[:8] for line in history] == ["*    2  ", "     1  "]
    assert "  apply      " in history[0]


def test_a_dry_run_prints_the_diff_and_stores_nothing(settings_file: Path, tmp_path: Path) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    dry = ok(
        karnak("config", "apply", routing_file(tmp_path, "b.yml", port=11201), "--dry-run", "--config", settings_file)
    )
    assert "dry run:" in dry and "would be revision 2" in dry and "11113 -> 11201" in dry
    rows = json.loads(ok(karnak("config", "history", "--json", "--config", settings_file)))
    assert [row["revision"] for row in rows] == [1]


def test_export_round_trips_through_apply_dry_run_without_a_diff_and_never_prints_the_secret(
    settings_file: Path, tmp_path: Path
) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    exported = ok(karnak("config", "export", "--config", settings_file))
    assert "secret: ${encrypted:" in exported
    exported_file = tmp_path / "exported.yml"
    exported_file.write_text(exported)
    dry = ok(karnak("config", "apply", exported_file, "--dry-run", "--config", settings_file))
    assert dry.splitlines() == ["no change", "no change: revision 1 stays"]


def test_diff_names_what_changed_between_two_revisions(settings_file: Path, tmp_path: Path) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    ok(karnak("config", "apply", routing_file(tmp_path, "b.yml", port=11202), "--config", settings_file))
    assert ok(karnak("config", "diff", "2", "1", "--config", settings_file)).splitlines() == [
        "~ forward_nodes[KARNAK-GW].destinations[pacs-a].port: 11202 -> 11113"
    ]


def test_rollback_stores_the_old_revision_again_and_an_unknown_one_names_the_range(
    settings_file: Path, tmp_path: Path
) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    ok(karnak("config", "apply", routing_file(tmp_path, "b.yml", port=11203), "--config", settings_file))
    back = ok(karnak("config", "rollback", "1", "--config", settings_file))
    assert "11203 -> 11113" in back and "stored revision 3 (based on revision 2" in back
    missing = karnak("config", "rollback", "9", "--config", settings_file)
    assert (missing.returncode, missing.stderr.strip()) == (2, "karnak: no revision 9: known revisions: 1 to 3")
    assert karnak("config", "export", "--revision", "0", "--config", settings_file).returncode == 2


def test_an_invalid_file_is_refused_with_every_problem_by_field_path_and_nothing_stored(
    settings_file: Path, tmp_path: Path
) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    bad = routing()
    bad["forward_nodes"][0]["destinations"][0]["port"] = 0
    bad["forward_nodes"][0]["destinations"][1]["type"] = "fax"
    bad["projects"][0]["secret"] = "not-hex-" + SECRET
    result = karnak("config", "apply", write_yaml(tmp_path / "bad.yml", bad), "--config", settings_file)
    assert result.returncode == 2
    assert SECRET not in result.stderr
    assert result.stderr.splitlines()[1:] == [
        "forward_nodes[0].destinations[0].port: must be between 1 and 65535 (line 10)",
        "forward_nodes[0].destinations[1].type: must be one of: dicom, stow (line 12)",
        "projects[0].secret: must be 32 hexadecimal digits (dashes allowed) (line 20)",
    ]
    rows = json.loads(ok(karnak("config", "history", "--json", "--config", settings_file)))
    assert [row["revision"] for row in rows] == [1]


def test_two_applies_at_the_same_time_one_wins_and_the_other_names_it(settings_file: Path, tmp_path: Path) -> None:
    ok(karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_file))
    files = [routing_file(tmp_path, f"p{i}.yml", port=11210 + i) for i in (0, 1)]
    runs = [
        start_karnak("config", "apply", f, "--based-on", "1", "--author", f"w{i}", "--config", settings_file)
        for i, f in enumerate(files)
    ]
    results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, _, err in results if code == 1)
    winner = next(out for code, out, _ in results if code == 0)
    assert "stored revision 2" in winner
    assert "revision 2 (apply by w" in loser and "based on revision 1: nothing was stored" in loser


def test_in_file_mode_apply_is_refused(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url, source="file"), **NO_BROKER, **routing()})
    result = karnak("config", "apply", path, "--config", path)
    assert result.returncode == 2
    assert "configuration.source is file" in result.stderr


def test_check_accepts_a_database_mode_file_without_routing(settings_file: Path) -> None:
    assert "routing configuration comes from the database" in ok(karnak("config", "check", settings_file))


def test_apply_tells_every_service_on_the_config_fanout(
    tmp_path: Path, db_url: str, amqp_url: str, prefix: str
) -> None:
    settings_path = write_yaml(
        tmp_path / "settings.yml", {**settings(db_url), "broker": {"url": amqp_url, "prefix": prefix}}
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(f"{prefix}.config", exchange_type="fanout", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, f"{prefix}.config")
        result = karnak("config", "apply", routing_file(tmp_path, "a.yml"), "--config", settings_path)
        assert "services notified" in ok(result)
        store = RevisionStore.open(settings_path)
        latest = store.latest()
        assert latest is not None
        register_topology(amqp_url, store.gateway_config(latest))
        store.close()
        method, _, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert json.loads(body) == {"revision": 1, "checksum": latest.checksum}
    finally:
        connection.close()
