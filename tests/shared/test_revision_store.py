"""The revision store on SQLite and PostgreSQL: bootstrap, apply, diff, rollback, immutability, races."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from karnak_shared.config import ConfigError
from karnak_shared.revisions import (
    RevisionConflict,
    RevisionNotFound,
    RevisionNotice,
    RevisionStore,
    RevisionStoreUnavailable,
    format_changes,
)
from tests.support.revisions import PROFILE, routing, settings, write_yaml


def open_store(tmp_path: Path, db_url: str, routing_keys: dict[str, Any] | None = None, **more: Any) -> RevisionStore:
    data = {**settings(db_url, **more), **(routing_keys or {})}
    return RevisionStore.open(write_yaml(tmp_path / "karnak.yml", data))


@pytest.fixture
def store(tmp_path: Path, db_url: str) -> Any:
    opened = open_store(tmp_path, db_url, routing())
    opened.check()
    yield opened
    opened.close()


def document(store: RevisionStore, port: int = 11113) -> dict[str, Any]:
    path = write_yaml(store.config_file.path.with_name(f"routing-{port}.yml"), routing(port=port))
    return store.read_document(path)


def test_an_empty_database_is_bootstrapped_from_the_files_routing_keys(tmp_path: Path, db_url: str) -> None:
    store = open_store(tmp_path, db_url, routing())
    try:
        assert store.latest() is None
        first = store.check()
        assert (first.number, first.origin) == (1, "bootstrap")
        assert store.check() == first
        # Profiles travel inside the revision as text.
        assert first.document["projects"][0]["profile"] == PROFILE.read_text()
    finally:
        store.close()


def test_an_empty_database_without_routing_in_the_file_names_karnak_config_apply(tmp_path: Path, db_url: str) -> None:
    store = open_store(tmp_path, db_url)
    try:
        with pytest.raises(ConfigError, match="karnak config apply"):
            store.check()
    finally:
        store.close()


def test_routing_keys_of_the_file_are_ignored_after_bootstrap_with_one_warning(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = open_store(tmp_path, db_url, routing())
    first.check()
    first.close()
    # A service started later with a changed file: the database stays the source of truth.
    later = open_store(tmp_path, db_url, routing(port=9999))
    try:
        with caplog.at_level(logging.WARNING, logger="karnak.revisions"):
            revision = later.check()
            later.check()
        assert revision.number == 1
        assert later.gateway_config(revision).forward_nodes[0].destinations[0].port == 11113  # type: ignore[union-attr]
        warnings = [r for r in caplog.records if r.getMessage() == "config.file-routing-ignored"]
        assert len(warnings) == 1
        assert "karnak config apply" in str(warnings[0].__dict__["fields"]["hint"])
    finally:
        later.close()


def test_apply_stores_the_next_revision_with_its_diff(store: RevisionStore) -> None:
    result = store.apply(document(store, 11114), author="alice", origin="apply", comment="new port")
    assert (result.stored, result.number, result.based_on) == (True, 2, 1)
    assert format_changes(result.changes) == ["~ forward_nodes[KARNAK-GW].destinations[pacs-a].port: 11113 -> 11114"]
    latest = store.latest()
    assert latest is not None
    assert (latest.number, latest.author, latest.origin, latest.comment) == (2, "alice", "apply", "new port")
    assert store.head() == RevisionNotice(revision=2, checksum=latest.checksum)
    assert store.gateway_config(latest).destination("pacs-a").port == 11114  # type: ignore[union-attr]


def test_applying_the_same_document_again_stores_nothing(store: RevisionStore) -> None:
    result = store.apply(document(store), author="alice", origin="apply")
    assert (result.stored, result.number, result.changes) == (False, 1, [])
    assert [r.number for r in store.history()] == [1]


def test_a_dry_run_shows_the_diff_and_stores_nothing(store: RevisionStore) -> None:
    result = store.apply(document(store, 11115), author="alice", origin="apply", dry_run=True)
    assert (result.stored, result.dry_run, result.number) == (False, True, 2)
    assert len(result.changes) == 1
    assert [r.number for r in store.history()] == [1]


def test_an_invalid_revision_is_refused_with_every_problem_by_field_path(store: RevisionStore) -> None:
    bad = document(store)
    bad["forward_nodes"][0]["destinations"][0]["port"] = 70000
    bad["forward_nodes"][0]["destinations"][1]["deidentification"]["project"] = "nowhere"
    bad["forward_nodes"][0]["colour"] = "blue"
    with pytest.raises(ConfigError) as raised:
        store.apply(bad, author="alice", origin="api")
    assert sorted(raised.value.problems) == [
        "forward_nodes[0].colour: unknown field (check its spelling)",
        "forward_nodes[0].destinations[0].port: must be between 1 and 65535",
    ]
    bad["forward_nodes"][0].pop("colour")
    bad["forward_nodes"][0]["destinations"][0]["port"] = 104
    with pytest.raises(ConfigError) as raised:
        store.apply(bad, author="alice", origin="api")
    assert raised.value.problems == [
        "forward_nodes[0].destinations[1].deidentification.project: no project named 'nowhere' in projects"
    ]
    assert [r.number for r in store.history()] == [1]


def test_an_invalid_file_is_refused_naming_field_and_line(store: RevisionStore, tmp_path: Path) -> None:
    data = routing()
    data["forward_nodes"][0]["destinations"][0]["port"] = 0
    with pytest.raises(ConfigError) as raised:
        store.read_document(write_yaml(tmp_path / "bad.yml", data))
    assert raised.value.problems == ["forward_nodes[0].destinations[0].port: must be between 1 and 65535 (line 10)"]


def test_rollback_stores_a_new_revision_equal_to_the_old_one(store: RevisionStore) -> None:
    store.apply(document(store, 11114), author="alice", origin="apply")
    result = store.rollback(1, author="bob")
    assert (result.number, result.based_on) == (3, 2)
    third, first = store.get(3), store.get(1)
    assert (third.origin, third.comment, third.checksum) == ("rollback", "rollback to revision 1", first.checksum)
    assert store.diff(1, 3) == []


def test_a_rollback_to_a_revision_that_does_not_exist_names_the_known_range(store: RevisionStore) -> None:
    store.apply(document(store, 11114), author="alice", origin="apply")
    with pytest.raises(RevisionNotFound, match=r"^no revision 7: known revisions: 1 to 2$"):
        store.rollback(7, author="bob")
    assert [r.number for r in store.history()] == [2, 1]


def test_a_change_based_on_an_older_revision_fails_naming_the_one_after_it(store: RevisionStore) -> None:
    store.apply(document(store, 11114), author="alice", origin="apply")
    with pytest.raises(RevisionConflict, match=r"revision 2 \(apply by alice") as raised:
        store.apply(document(store, 11115), author="bob", origin="console", based_on=1)
    assert (raised.value.based_on, raised.value.winner.number) == (1, 2)
    assert [r.number for r in store.history()] == [2, 1]


def test_revisions_are_immutable_in_the_database(store: RevisionStore, db_url: str) -> None:
    from karnak_shared.database import create_database_engine

    engine = create_database_engine(db_url)
    try:
        for statement in ("UPDATE config_revisions SET author = 'mallory'", "DELETE FROM config_revisions"):
            with pytest.raises(Exception, match="immutable"), engine.begin() as connection:
                connection.execute(text(statement))
    finally:
        engine.dispose()
    assert store.get(1).author.startswith("file ")


@pytest.mark.parametrize("round_", range(4))
def test_two_concurrent_applies_one_wins_and_the_other_names_it(store: RevisionStore, round_: int) -> None:
    base = store.latest()
    assert base is not None
    documents = [document(store, 12000 + round_ * 2), document(store, 12001 + round_ * 2)]
    start = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def apply(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = store.apply(
                documents[index], author=f"writer-{index}", origin="api", based_on=base.number
            )
        except RevisionConflict as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=apply, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    conflicts = [o for o in outcomes if isinstance(o, RevisionConflict)]
    stored = [o for o in outcomes if not isinstance(o, RevisionConflict)]
    assert len(conflicts) == 1 and len(stored) == 1, outcomes
    winner = stored[0].revision
    assert winner.number == base.number + 1
    assert conflicts[0].winner == winner
    assert f"revision {winner.number} (api by {winner.author}" in str(conflicts[0])
    assert store.latest() == winner


def test_a_revision_whose_profile_is_a_path_is_refused(store: RevisionStore) -> None:
    by_path = document(store)
    by_path["projects"][0]["profile"] = str(PROFILE)
    with pytest.raises(ConfigError, match=r"^projects\[0\]\.profile: a revision carries the profile's YAML text"):
        store.apply(by_path, author="alice", origin="api")


def test_services_starting_together_on_an_empty_database_bootstrap_one_revision(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url), **routing()})
    stores = [RevisionStore.open(path) for _ in range(3)]
    numbers: list[int] = []
    threads = [threading.Thread(target=lambda s=s: numbers.append(s.check().number)) for s in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert numbers == [1, 1, 1]
        assert [(r.number, r.origin) for r in stores[0].history()] == [(1, "bootstrap")]
    finally:
        for store in stores:
            store.close()


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "karnak.yml", settings("postgresql://karnak:hunter2@127.0.0.1:9/karnak"))
    with pytest.raises(RevisionStoreUnavailable) as raised:
        RevisionStore.open(path)
    assert str(raised.value).startswith(
        "the configuration revisions' database at postgresql://karnak:***@127.0.0.1:9/karnak is unavailable: "
    )
    assert "hunter2" not in str(raised.value)
