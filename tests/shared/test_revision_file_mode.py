"""configuration.source: file: each change of the file becomes a revision by itself (origin `file`),
a Kubernetes ConfigMap update (kubelet's `..data` symlink swap) included."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from karnak_shared.errors import ConfigError
from karnak_shared.revisions import RevisionStore, RoutingReadOnly
from tests.support.revisions import PROFILE, routing, settings, write_yaml


class ConfigMapVolume:
    """A folder laid out as kubelet mounts a ConfigMap: `..<timestamp>/` holds the files, `..data` points at
    it, and each key is a symlink `key -> ..data/key`. An update writes a new timestamped folder and
    renames a new `..data` link over the old one: one atomic swap for every file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()

    def publish(self, files: dict[str, str]) -> None:
        self.generation += 1
        folder = self.root / f"..2026_12_03_18_00_00.{self.generation:06d}"
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_text(content, encoding="utf-8")
        link = self.root / "..data_tmp"
        link.symlink_to(folder.name)
        os.replace(link, self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        for old in self.root.glob("..2026_*"):
            if old != folder:
                shutil.rmtree(old)


def file_text(db_url: str, keys: dict[str, Any], profile: str = "profile.yml") -> str:
    import yaml

    keys["projects"][0]["profile"] = profile
    return yaml.safe_dump({**settings(db_url, source="file"), **keys}, sort_keys=False)


def test_a_changed_file_becomes_a_revision_by_itself(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url, source="file"), **routing()})
    store = RevisionStore.open(path)
    try:
        first = store.check()
        assert (first.number, first.origin) == (1, "file")
        assert store.check() == first  # unchanged: no new revision
        write_yaml(path, {**settings(db_url, source="file"), **routing(port=11120)})
        second = store.check()
        assert (second.number, second.origin) == (2, "file")
        assert store.gateway_config(second).destination("pacs-a").port == 11120  # type: ignore[union-attr]
        assert [r.number for r in store.history()] == [2, 1]
    finally:
        store.close()


def test_a_configmap_update_through_the_data_symlink_swap_becomes_a_revision(tmp_path: Path, db_url: str) -> None:
    volume = ConfigMapVolume(tmp_path / "config")
    profile = PROFILE.read_text()
    volume.publish({"karnak.yml": file_text(db_url, routing()), "profile.yml": profile})
    store = RevisionStore.open(volume.root / "karnak.yml")
    try:
        assert store.check().number == 1
        volume.publish({"karnak.yml": file_text(db_url, routing(port=11121)), "profile.yml": profile})
        second = store.check()
        assert second.number == 2
        assert second.document["forward_nodes"][0]["destinations"][0]["port"] == 11121
        # The profile is part of the revision: a changed profile file alone is a change too.
        volume.publish({"karnak.yml": file_text(db_url, routing(port=11121)), "profile.yml": profile + "\n# v2\n"})
        third = store.check()
        assert third.number == 3
        assert third.document["projects"][0]["profile"].endswith("# v2\n")
        assert store.check() == third
    finally:
        store.close()


def test_an_invalid_file_leaves_the_latest_revision_and_names_the_problem(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url, source="file"), **routing()})
    store = RevisionStore.open(path)
    try:
        first = store.check()
        broken = routing()
        broken["forward_nodes"][0]["destinations"][0]["port"] = "eleven"
        write_yaml(path, {**settings(db_url, source="file"), **broken})
        with pytest.raises(ConfigError, match=r"forward_nodes\[0\]\.destinations\[0\]\.port: .* \(line \d+\)"):
            store.check()
        assert store.latest() == first
    finally:
        store.close()


def test_in_file_mode_only_the_file_changes_the_routing(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url, source="file"), **routing()})
    store = RevisionStore.open(path)
    try:
        store.check()
        with pytest.raises(RoutingReadOnly, match=r"configuration\.source is file"):
            store.apply(store.read_document(path), author="alice", origin="console")
        with pytest.raises(RoutingReadOnly):
            store.rollback(1, author="alice")
    finally:
        store.close()


def test_several_instances_reading_the_same_new_file_store_one_revision(tmp_path: Path, db_url: str) -> None:
    path = write_yaml(tmp_path / "karnak.yml", {**settings(db_url, source="file"), **routing()})
    stores = [RevisionStore.open(path) for _ in range(3)]
    try:
        import threading

        numbers: list[int] = []
        threads = [threading.Thread(target=lambda s=s: numbers.append(s.check().number)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert numbers == [1, 1, 1]
        assert len(stores[0].history()) == 1
    finally:
        for store in stores:
            store.close()
