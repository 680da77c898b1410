"""The processor's routes built from a configuration revision: the profile travels as text in the revision."""

from __future__ import annotations

from pathlib import Path

from karnak_processor.routing import Router
from karnak_shared.revisions import RevisionStore
from tests.support.revisions import routing, settings, write_yaml


def test_a_revision_builds_the_routes_with_its_profile_text_whatever_the_file_system_holds(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yml"
    profile.write_text(
        "name: from-the-revision\nversion: '1.0'\nminimumKarnakVersion: '0.9.2'\nprofileElements:\n"
        "  - name: DICOM basic profile\n    codename: basic.dicom.profile\n"
    )
    path = write_yaml(
        tmp_path / "karnak.yml", {**settings(f"sqlite:///{tmp_path / 'k.db'}"), **routing(profile=profile)}
    )
    store = RevisionStore.open(path)
    try:
        revision = store.check()
        profile.unlink()  # a service on another host has no such file: the revision carries the text
        config = store.gateway_config(revision)
        route = Router(config, base_dir=tmp_path / "elsewhere").route("KARNAK-GW", "research")
    finally:
        store.close()
    assert route is not None and route.transformation.deidentifier is not None
    assert route.transformation.deidentifier.profile.name == "from-the-revision"
