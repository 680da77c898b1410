"""The blob store's contract, run against both stores: the directory and a real S3 server (SeaweedFS).

Then what only the S3 store has: its configuration (errors naming the field, credentials by reference,
never shown) and the errors of a server that refuses or cannot be reached.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from karnak_dicom.instance import read_instance
from karnak_dicom.testing import make_study
from karnak_shared.blobstore import BlobStore, DirectoryBlobStore, open_blob_store
from karnak_shared.blobstore_s3 import S3BlobStore
from karnak_shared.config import BlobStoreConfig, parse_config
from karnak_shared.errors import BlobMissing, BlobStoreError, ConfigError, InvalidBlobReference
from karnak_shared.service.testing.seaweedfs import SeaweedS3

DATA = b"\0" * 128 + b"DICM" + bytes(range(256)) * 256


def s3_store(server: SeaweedS3, **overrides: str) -> S3BlobStore:
    settings = {**server.blob_store_settings(prefix=f"test-{uuid.uuid4().hex[:8]}"), **overrides}
    store = open_blob_store(BlobStoreConfig.model_validate(settings))
    assert isinstance(store, S3BlobStore)
    return store


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    blobs: BlobStore
    if request.param == "directory":
        blobs = DirectoryBlobStore(tmp_path / "blobs")
    else:
        blobs = s3_store(request.getfixturevalue("s3_server"))
    blobs.ensure()
    yield blobs


def references(store: BlobStore) -> set[str]:
    return {blob.reference for blob in store.blobs()}


# --- writing and reading ------------------------------------------------------------------------------


def test_put_then_get_returns_the_same_bytes(store: BlobStore) -> None:
    assert store.get(store.put(DATA)) == DATA


def test_put_in_parts_stores_them_one_after_the_other(store: BlobStore) -> None:
    assert store.get(store.put((DATA[:132], memoryview(DATA)[132:]))) == DATA


def test_an_empty_blob_is_stored(store: BlobStore) -> None:
    assert store.get(store.put(b"")) == b""


def test_each_put_gets_a_new_reference_that_the_listing_shows_with_its_size(store: BlobStore) -> None:
    first, second = store.put(DATA), store.put(DATA[:10])

    assert first != second
    sizes = {blob.reference: blob.size for blob in store.blobs()}
    assert sizes == {first: len(DATA), second: 10}


def test_a_written_blob_is_readable_once_synced_and_a_discarded_one_is_gone(store: BlobStore) -> None:
    kept = store.write((DATA[:100], DATA[100:]))
    dropped = store.write(DATA)

    assert kept.sync() == kept.reference
    dropped.discard()

    assert store.get(kept.reference) == DATA
    assert references(store) == {kept.reference}


def test_a_large_blob_goes_in_parts_and_comes_back_whole(store: BlobStore) -> None:
    # Over the S3 store's single-PUT limit (16 MiB): a multipart upload from the parts, never joined.
    header, pixels = DATA, os.urandom(20 * 1024 * 1024)
    reference = store.put((header, pixels))

    with store.open(reference) as stream:
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(header + pixels).digest()


def test_open_reads_any_range_and_knows_the_size(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024)
    reference = store.put(data)

    with store.open(reference) as stream:
        assert stream.read(132) == data[:132]
        stream.seek(2 * 1024 * 1024 + 5)  # far ahead: a new ranged read on S3
        assert stream.read(10) == data[2 * 1024 * 1024 + 5 : 2 * 1024 * 1024 + 15]
        stream.seek(200)  # back again
        assert stream.read(50) == data[200:250]
        assert stream.seek(0, io.SEEK_END) == len(data)
        assert stream.read(10) == b""


def test_an_instance_is_read_through_the_stores_source_header_first(store: BlobStore, tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", ct=0, mr=0, multiframe=0, large=1, compressed=0)
    reference = store.put(study.paths[0].read_bytes())

    instance = read_instance(store.source(reference))

    assert instance.size == study.paths[0].stat().st_size
    assert instance.sop_instance_uid
    with instance.open() as stream:
        assert stream.read() == study.paths[0].read_bytes()


# --- links and deletion -------------------------------------------------------------------------------


def test_a_link_is_an_independent_reference_to_the_same_bytes(store: BlobStore) -> None:
    original = store.put(DATA)
    link = store.link(original)

    store.delete(original)

    assert link != original
    assert store.get(link) == DATA
    assert references(store) == {link}


def test_deleting_the_link_keeps_the_original(store: BlobStore) -> None:
    original = store.put(DATA)
    store.delete(store.link(original))

    assert store.get(original) == DATA


def test_deleting_twice_is_fine(store: BlobStore) -> None:
    reference = store.put(DATA)
    store.delete(reference)
    store.delete(reference)

    assert references(store) == set()


def test_a_missing_blob_is_an_error_naming_it(store: BlobStore) -> None:
    reference = store.put(DATA)
    store.delete(reference)

    for operation in (store.get, store.open, store.link):
        with pytest.raises(BlobMissing, match=reference):
            operation(reference)


@pytest.mark.parametrize("reference", ["../etc/passwd", "ab/../../x.dcm", "/tmp/x.dcm", "AB/" + "0" * 32 + ".dcm"])
def test_references_not_of_the_store_are_refused_before_anything_is_touched(store: BlobStore, reference: str) -> None:
    for operation in (store.get, store.open, store.link, store.delete, store.source, store.set_aside):
        with pytest.raises(InvalidBlobReference):
            operation(reference)


# --- what the sweep relies on ---------------------------------------------------------------------------


def test_a_blob_set_aside_leaves_the_listing_and_comes_back_when_read(store: BlobStore) -> None:
    reference = store.put(DATA)
    store.set_aside(reference)

    assert references(store) == set()
    assert [blob.reference for blob in store.set_aside_blobs()] == [reference]

    assert store.get(reference) == DATA  # a message that still named it reads it: it is back
    assert references(store) == {reference}
    assert list(store.set_aside_blobs()) == []


def test_a_blob_set_aside_comes_back_for_a_link_and_an_instance_reader(store: BlobStore, tmp_path: Path) -> None:
    study = make_study(tmp_path / "study", ct=0, mr=0, multiframe=0, large=1, compressed=0)
    first, second = store.put(DATA), store.put(study.paths[0].read_bytes())
    store.set_aside(first)
    store.set_aside(second)

    assert store.get(store.link(first)) == DATA
    assert read_instance(store.source(second)).sop_instance_uid
    assert list(store.set_aside_blobs()) == []


def test_purge_removes_a_set_aside_blob_for_good_and_delete_removes_both(store: BlobStore) -> None:
    purged, deleted = store.put(DATA), store.put(DATA)
    store.set_aside(purged)
    store.set_aside(deleted)

    store.purge(purged)
    store.delete(deleted)  # the ack of a message whose blob the sweep had set aside

    assert list(store.set_aside_blobs()) == []
    with pytest.raises(BlobMissing):
        store.get(purged)


# --- the S3 store's own settings and failures --------------------------------------------------------------


def test_the_s3_store_keeps_its_objects_under_the_prefix(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server)
    reference = store.put(DATA)

    keys = [obj["Key"] for obj in store._client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)["Contents"]]
    assert keys == [f"{store.prefix}{reference}"]
    assert store.location == f"s3://{s3_server.bucket}/{store.prefix} at {s3_server.endpoint_url}"


def test_wrong_credentials_fail_at_start_naming_the_store_not_the_secret(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, secret_access_key="not-the-secret-at-all")

    with pytest.raises(BlobStoreError) as caught:
        store.ensure()
    assert s3_server.bucket in str(caught.value)
    assert "not-the-secret-at-all" not in str(caught.value)


def test_a_server_that_cannot_be_reached_is_a_blob_store_error(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server, endpoint_url="http://127.0.0.1:9")

    with pytest.raises(BlobStoreError, match=r"127\.0\.0\.1:9"):
        store.put(b"x")


def test_ensure_creates_a_bucket_the_server_does_not_have(s3_server: SeaweedS3) -> None:
    bucket = f"karnak-{uuid.uuid4().hex[:10]}"
    store = s3_store(s3_server, url=f"s3://{bucket}/p")
    store.ensure()

    assert store.get(store.put(DATA)) == DATA


CONFIG = """
forward_nodes:
  - ae_title: KARNAK-GW
    destinations: [{id: pacs, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104}]
blob_store:
{settings}
"""


def config_error(settings: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace("{settings}", settings))
    return str(caught.value)


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ("  url: http://bucket/prefix", "blob_store.url", "s3://bucket"),
        ("  url: s3://Upper_Case/p", "blob_store.url", "lower-case"),
        ("  url: s3://b/p", "blob_store.url", "3-63"),
        ("  url: s3://bucket/p\n  endpoint_url: ftp://x", "blob_store.endpoint_url", "http://"),
        ("  url: s3://bucket/p\n  region: 'EU WEST'", "blob_store.region", "pattern"),
        ("  url: s3://bucket/p\n  access_key_id: abc", "blob_store", "go together"),
        ("  endpoint_url: http://s3.example:9000", "blob_store", "give url"),
        ("  url: s3://bucket/p\n  path: /var/blobs", "blob_store", "exclusive"),
    ],
)
def test_invalid_s3_settings_fail_naming_the_field(settings: str, field: str, words: str) -> None:
    message = config_error(settings)

    assert field in message
    assert words in message


def test_credentials_come_by_reference_and_are_never_shown(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KARNAK_TEST_S3_KEY", s3_server.access_key)
    secret_file = tmp_path / "s3-secret"
    secret_file.write_text(s3_server.secret_key + "\n")
    config = parse_config(
        CONFIG.replace(
            "{settings}",
            f"  url: s3://{s3_server.bucket}/by-reference\n"
            f"  endpoint_url: {s3_server.endpoint_url}\n"
            "  access_key_id: ${KARNAK_TEST_S3_KEY}\n"
            f"  secret_access_key: ${{file:{secret_file}}}",
        )
    )
    store = open_blob_store(config.blob_store)
    store.ensure()

    assert store.get(store.put(DATA)) == DATA
    shown = f"{config!r} {config.blob_store!r} {store.location} {config.model_dump_json()}"
    assert s3_server.secret_key not in shown
    assert s3_server.access_key not in shown


def test_objects_under_the_prefix_that_are_not_blobs_are_not_listed(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server)
    reference = store.put(DATA)
    for key in ("README", f"notes/{reference}", f"{reference}.bak"):
        store._client.put_object(Bucket=store.bucket, Key=f"{store.prefix}{key}", Body=b"an operator's")

    assert references(store) == {reference}
    assert list(store.set_aside_blobs()) == []


def test_a_blob_is_read_in_one_streaming_get_and_a_far_seek_costs_one_ranged_get(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server)
    data = os.urandom(8 * 1024 * 1024)
    reference = store.put(data)
    ranges: list[str | None] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        ranges.append(params.get("Range"))

    store._client.meta.events.register("provide-client-params.s3.GetObject", count)
    with store.open(reference) as stream:
        assert stream.read(132) == data[:132]  # the header: from the first GET, which goes on streaming
        stream.seek(100 * 1024)  # a short skip ahead reads on
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(data[100 * 1024 :]).digest()
        stream.seek(10)  # back: a new GET from there
        assert stream.read(10) == data[10:20]

    assert ranges == [None, "bytes=10-"]


def test_a_small_blobs_source_fetches_it_once_for_all_the_opens_of_a_handling(s3_server: SeaweedS3) -> None:
    store = s3_store(s3_server)
    small, large = store.put(DATA), store.put((DATA, os.urandom(17 * 1024 * 1024)))
    gets: list[str] = []
    store._client.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"][-39:])
    )

    small_source, large_source = store.source(small), store.source(large)
    for _ in range(3):  # the head and digest, the header, the copy
        with small_source.open() as stream:
            assert stream.read() == DATA
        with large_source.open() as stream:
            assert stream.read(len(DATA)) == DATA

    assert gets == [small, large, large, large]  # a large one is streamed again each time, never kept
