"""`karnak blobs sweep` on both stores: strays go (set aside, then purged); a blob a message names stays.

The sweep's rule is in `karnak_shared.blob_sweep`. The first tests run the rule alone with the queued
references given; the last ones run the command on real RabbitMQ, with messages in every kind of queue.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_shared import header_names
from karnak_shared.blob_sweep import parse_duration, sweep
from karnak_shared.blobstore import BlobStore, DirectoryBlobStore, open_blob_store
from karnak_shared.config import BlobStoreConfig
from karnak_shared.revisions import RevisionStore
from karnak_shared.service.testing.seaweedfs import SeaweedS3
from tests.conftest import register_topology
from tests.support.revisions import routing, settings, write_yaml

DATA = b"\0" * 128 + b"DICM" + b"pixels" * 100
HOUR = 3600.0


@pytest.fixture(params=["directory", "s3"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "directory":
        return {"path": str(tmp_path / "blobs")}
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    return server.blob_store_settings(prefix=f"sweep-{tmp_path.name[-20:]}")


@pytest.fixture
def store(store_settings: dict[str, Any]) -> Iterator[BlobStore]:
    blobs = open_blob_store(BlobStoreConfig.model_validate(store_settings))
    blobs.ensure()
    yield blobs


def later(seconds: float) -> Any:
    return lambda: time.time() + seconds


def listed(store: BlobStore) -> set[str]:
    return {blob.reference for blob in store.blobs()}


def aside(store: BlobStore) -> set[str]:
    return {blob.reference for blob in store.set_aside_blobs()}


def test_a_stray_blob_is_set_aside_then_purged_a_sweep_later(store: BlobStore) -> None:
    named, stray = store.put(DATA), store.put(DATA)

    first = sweep(store, lambda: {named}, HOUR, now=later(2 * HOUR))

    assert first.set_aside == [stray] and first.referenced == 1 and first.purged == []
    assert listed(store) == {named} and aside(store) == {stray}

    second = sweep(store, lambda: {named}, HOUR, now=later(2 * HOUR))  # the set-aside copy is old enough now

    assert second.purged == [stray]
    assert listed(store) == {named} and aside(store) == set()


def test_blobs_younger_than_the_age_are_left_alone(store: BlobStore) -> None:
    young = store.put(DATA)  # perhaps a receiver's, whose message is being published right now

    report = sweep(store, set, HOUR)

    assert report.too_young == 1 and report.set_aside == []
    assert listed(store) == {young}


def test_a_set_aside_blob_a_message_reads_comes_back_and_is_not_purged(store: BlobStore) -> None:
    reference = store.put(DATA)
    sweep(store, set, HOUR, now=later(2 * HOUR))  # its message was being handled: in no queue
    assert aside(store) == {reference}

    assert store.get(reference) == DATA  # the handler reads it (or retries later and reads it then)
    report = sweep(store, lambda: {reference}, HOUR, now=later(4 * HOUR))  # the retried message is queued

    assert report.purged == [] and listed(store) == {reference}


def test_a_set_aside_blob_named_by_a_message_queued_since_is_kept_aside(store: BlobStore) -> None:
    reference = store.put(DATA)
    sweep(store, set, HOUR, now=later(2 * HOUR))

    report = sweep(store, lambda: {reference}, HOUR, now=later(4 * HOUR))

    assert report.purged == [] and report.kept_aside == 1
    assert store.get(reference) == DATA


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(store: BlobStore) -> None:
    stray = store.put(DATA)
    store.set_aside(already := store.put(DATA))

    report = sweep(store, set, HOUR, dry_run=True, now=later(2 * HOUR))

    assert report.set_aside == [stray] and report.purged == [already]
    assert "would be set aside" in report.summary()
    assert listed(store) == {stray} and aside(store) == {already}


def test_durations_are_read_with_their_units() -> None:
    assert [parse_duration(t) for t in ("0", "45", "30s", "10m", "1h", "2d")] == [0, 45, 30, 600, 3600, 172800]
    with pytest.raises(ValueError, match=r"e\.g\. 1h"):
        parse_duration("an hour")


# --- the command, on real RabbitMQ ----------------------------------------------------------------------


def karnak_blobs_sweep(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("karnak")), "blobs", "sweep", "--config", str(config), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def queue_depths(amqp_url: str, queues: list[str]) -> dict[str, int]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        return {q: int(channel.queue_declare(q, passive=True).method.message_count) for q in queues}
    finally:
        connection.close()


def test_the_command_keeps_every_blob_a_queued_message_names_in_any_queue_and_removes_the_rest(
    tmp_path: Path, amqp_url: str, prefix: str, store_settings: dict[str, Any], store: BlobStore
) -> None:
    config = write_yaml(
        tmp_path / "karnak.yml",
        {
            **settings(
                f"sqlite:///{tmp_path / 'karnak.db'}",
                broker={"url": amqp_url, "prefix": prefix, "retry_delays": [600]},
                blob_store=store_settings,
            ),
            **routing(),
        },
    )
    revisions = RevisionStore.open(config)
    try:
        topology = register_topology(amqp_url, revisions.gateway_config(revisions.check()))
        revisions.notify(revisions.check())  # declares the revision's queues
    finally:
        revisions.close()
    queues = [topology.received_queue, f"{prefix}.send.dicom.pacs-a", topology.retry_queue(600), topology.dead_queue]
    named = {queue: store.put(DATA) for queue in queues}
    strays = {store.put(DATA) for _ in range(3)}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for queue, reference in named.items():
        headers = {header_names.BLOB: reference}
        channel.basic_publish("", queue, b"", pika.BasicProperties(delivery_mode=2, headers=headers))
        channel.basic_publish("", queue, b"inline", pika.BasicProperties(delivery_mode=2, headers={}))
    connection.close()
    depths = queue_depths(amqp_url, queues)

    dry = karnak_blobs_sweep(config, "--older-than", "0", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert set(json.loads(dry.stdout)["set_aside"]) == strays
    assert listed(store) == set(named.values()) | strays

    result = karnak_blobs_sweep(config, "--older-than", "0", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report["set_aside"]) == strays and set(report["purged"]) == strays
    assert report["referenced"] == len(queues)
    assert listed(store) == set(named.values()) and aside(store) == set()
    assert queue_depths(amqp_url, queues) == depths  # every message handed back


def test_the_command_with_the_default_age_leaves_new_blobs_and_says_so(
    tmp_path: Path, amqp_url: str, prefix: str, store_settings: dict[str, Any], store: BlobStore
) -> None:
    config = write_yaml(
        tmp_path / "karnak.yml",
        {
            **settings(
                f"sqlite:///{tmp_path / 'karnak.db'}",
                broker={"url": amqp_url, "prefix": prefix},
                blob_store=store_settings,
            ),
            **routing(),
        },
    )
    revisions = RevisionStore.open(config)
    try:
        register_topology(amqp_url, revisions.gateway_config(revisions.check()))
        revisions.notify(revisions.check())
    finally:
        revisions.close()
    fresh = store.put(DATA)

    result = karnak_blobs_sweep(config)

    assert result.returncode == 0, result.stderr
    assert "1 blob(s) examined" in result.stdout and "1 too young" in result.stdout
    assert listed(store) == {fresh}


def test_a_bad_age_is_refused_naming_the_option(tmp_path: Path) -> None:
    result = karnak_blobs_sweep(tmp_path / "none.yml", "--older-than", "soon")

    assert result.returncode == 2
    assert "--older-than" in result.stderr


def test_directory_store_listing_ignores_files_that_are_not_blobs(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path / "blobs")
    store.ensure()
    reference = store.put(DATA)
    (tmp_path / "blobs" / "README").write_text("an operator's note")
    (tmp_path / "blobs" / reference[:2] / "notes.txt").write_text("x")

    assert listed(store) == {reference}
    assert sweep(store, set, 0).set_aside == [reference]
    assert (tmp_path / "blobs" / "README").exists()
