"""Secrets in revisions: encrypted with secrets.key (AES-GCM) or kept as references, never shown in clear."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from karnak_shared.config import read_config_file
from karnak_shared.database import create_database_engine
from karnak_shared.errors import ConfigError
from karnak_shared.revisions import RevisionStore, format_changes, is_encrypted
from tests.support.revisions import SECRET, routing, settings, write_yaml

TOKEN = "kheops-token-6f1d2c9b8a7e"


def open_store(folder: Path, db_url: str, routing_keys: dict[str, Any] | None = None, **more: Any) -> RevisionStore:
    return RevisionStore.open(write_yaml(folder / "karnak.yml", {**settings(db_url, **more), **(routing_keys or {})}))


def with_stow(keys: dict[str, Any], headers: Any) -> dict[str, Any]:
    keys["forward_nodes"][0]["destinations"].append(
        {"id": "kheops", "type": "stow", "url": "https://kheops.example/api/studies", "headers": headers}
    )
    return keys


def table_text(db_url: str) -> str:
    engine = create_database_engine(db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM config_revisions")).all()
    finally:
        engine.dispose()
    return repr(rows)


def test_a_literal_secret_is_stored_encrypted_and_given_back_to_the_services(tmp_path: Path, db_url: str) -> None:
    store = open_store(tmp_path, db_url, with_stow(routing(), f"<key>Authorization</key><value>Bearer {TOKEN}</value>"))
    try:
        revision = store.check()
        assert is_encrypted(revision.document["projects"][0]["secret"])
        assert is_encrypted(revision.document["forward_nodes"][0]["destinations"][2]["headers"])
        for shown in (table_text(db_url), store.export(revision), repr(revision)):
            assert SECRET not in shown and TOKEN not in shown
        config = store.gateway_config(revision)
        assert config.projects[0].secret.get_secret_value() == SECRET
        assert TOKEN in str(config.destination("kheops").headers)  # type: ignore[union-attr]
    finally:
        store.close()


def test_references_are_kept_as_references_and_resolved_when_a_service_builds_the_revision(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STUDY_X_SECRET", SECRET)
    (tmp_path / "token").write_text(TOKEN + "\n")
    keys = with_stow(routing(secret="${STUDY_X_SECRET}"), {"Authorization": f"Bearer ${{file:{tmp_path / 'token'}}}"})
    store = open_store(tmp_path, db_url, keys, key=None)  # references need no key
    try:
        revision = store.check()
        assert revision.document["projects"][0]["secret"] == "${STUDY_X_SECRET}"
        assert SECRET not in table_text(db_url) and TOKEN not in table_text(db_url)
        config = store.gateway_config(revision)
        assert config.projects[0].secret.get_secret_value() == SECRET
        assert config.destination("kheops").headers == {"Authorization": f"Bearer {TOKEN}"}  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_literal_secret_without_secrets_key_is_refused_naming_its_field_not_its_value(
    tmp_path: Path, db_url: str
) -> None:
    store = open_store(tmp_path, db_url, routing(), key=None)
    try:
        with pytest.raises(ConfigError) as raised:
            store.check()
        assert raised.value.problems[0].startswith("projects[0].secret: a secret written in clear can only be stored")
        assert SECRET not in str(raised.value)
        assert store.latest() is None
    finally:
        store.close()


def test_applying_the_same_literal_secret_again_changes_nothing(tmp_path: Path, db_url: str) -> None:
    store = open_store(tmp_path, db_url, routing())
    try:
        first = store.check()
        again = store.apply(store.read_document(store.config_file.path), author="alice", origin="apply")
        assert (again.stored, again.changes) == (False, [])
        changed = store.apply(
            store.read_document(write_yaml(tmp_path / "new.yml", routing(secret="ab" * 16))),
            author="alice",
            origin="apply",
        )
        assert format_changes(changed.changes) == [
            "~ projects[study-x].secret: (encrypted secret) -> (encrypted secret)"
        ]
        assert changed.revision is not None and changed.revision.checksum != first.checksum
    finally:
        store.close()


def test_another_key_cannot_read_the_secrets_and_says_so_without_them(tmp_path: Path, db_url: str) -> None:
    store = open_store(tmp_path, db_url, routing())
    revision = store.check()
    store.close()
    other_key = base64.b64encode(bytes(32)).decode()
    other = open_store(tmp_path / "other", db_url, key=other_key)
    try:
        with pytest.raises(ConfigError) as raised:
            other.gateway_config(revision)
        assert raised.value.problems == [
            "revision 1: projects[0].secret: the encrypted secret does not decrypt with secrets.key "
            "(encrypted with another key, or damaged)"
        ]
    finally:
        other.close()


def test_no_log_line_of_a_store_shows_a_secret(tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        store = open_store(tmp_path, db_url, routing())
        try:
            store.check()
            store.apply(store.read_document(write_yaml(tmp_path / "b.yml", routing(port=2))), author="a", origin="api")
            store.rollback(1, author="a")
        finally:
            store.close()
    logged = "\n".join(f"{r.getMessage()} {r.__dict__.get('fields')}" for r in caplog.records)
    assert "config.revision-stored" in logged
    assert SECRET not in logged


def test_the_secrets_key_is_read_from_a_file_and_a_bad_one_is_named_not_quoted(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets-key"
    key_file.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    good = write_yaml(tmp_path / "good.yml", {"secrets": {"key": f"${{file:{key_file}}}"}})
    assert read_config_file(good).settings.secrets.key_bytes() == bytes(range(32))
    bad = write_yaml(tmp_path / "bad.yml", {"secrets": {"key": "short-and-secret"}})
    with pytest.raises(ConfigError) as raised:
        read_config_file(bad)
    assert raised.value.problems == [
        "secrets.key: must be 32 bytes as base64 (openssl rand -base64 32) or as 64 hexadecimal digits (line 2)"
    ]
