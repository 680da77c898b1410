"""The blob store: durable write-once files addressed by references that cannot escape its root."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from karnak_shared.blobstore import DirectoryBlobStore
from karnak_shared.errors import BlobStoreError

DATA = b"DICM" + bytes(range(256)) * 64


@pytest.fixture
def store(tmp_path: Path) -> DirectoryBlobStore:
    blobs = DirectoryBlobStore(tmp_path / "blobs")
    blobs.ensure()
    return blobs


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_then_get_returns_the_same_bytes(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    assert store.get(reference) == DATA


def test_put_in_parts_stores_them_one_after_the_other(store: DirectoryBlobStore) -> None:
    reference = store.put((DATA[:132], DATA[132:]))

    assert store.get(reference) == DATA


def test_a_short_write_is_continued_where_it_stopped(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def write_a_little(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data[:1000]))  # as a signal or a nearly full disk may cut a write

    monkeypatch.setattr(os, "write", write_a_little)
    reference = store.put((DATA[:2500], DATA[2500:]))
    monkeypatch.undo()

    assert store.get(reference) == DATA


def test_put_returns_a_relative_reference_inside_the_root(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    assert not os.path.isabs(reference)
    assert store.path(reference).parent.parent == store.root
    assert reference.endswith(".dcm")


def test_each_put_gets_a_new_reference(store: DirectoryBlobStore) -> None:
    assert store.put(DATA) != store.put(DATA)


def test_put_leaves_no_temporary_file(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    assert files_under(store.root) == [store.path(reference)]
    assert not list(store.root.rglob("*.tmp"))


def test_put_of_empty_bytes_is_stored(store: DirectoryBlobStore) -> None:
    assert store.get(store.put(b"")) == b""


def test_link_gives_another_reference_to_the_same_bytes(store: DirectoryBlobStore) -> None:
    original = store.put(DATA)

    linked = store.link(original)

    assert linked != original
    assert store.get(linked) == DATA


def test_deleting_the_original_keeps_the_link(store: DirectoryBlobStore) -> None:
    original = store.put(DATA)
    linked = store.link(original)

    store.delete(original)

    assert store.get(linked) == DATA
    with pytest.raises(BlobStoreError):
        store.get(original)


def test_deleting_the_link_keeps_the_original(store: DirectoryBlobStore) -> None:
    original = store.put(DATA)
    linked = store.link(original)

    store.delete(linked)

    assert store.get(original) == DATA


def test_link_falls_back_to_a_copy_when_hard_links_are_not_possible(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = store.put(DATA)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    linked = store.link(original)
    monkeypatch.undo()
    store.delete(original)

    assert store.get(linked) == DATA


def test_delete_removes_the_file(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    store.delete(reference)

    assert files_under(store.root) == []


def test_deleting_twice_is_fine(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    store.delete(reference)
    store.delete(reference)

    assert files_under(store.root) == []


def test_missing_blob_is_an_error_naming_it(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)
    store.delete(reference)

    with pytest.raises(BlobStoreError) as caught:
        store.get(reference)

    assert reference in str(caught.value)
    assert "missing" in str(caught.value)


def test_linking_a_missing_blob_is_an_error_naming_it(store: DirectoryBlobStore) -> None:
    reference = "0a/" + "0a" * 16 + ".dcm"

    with pytest.raises(BlobStoreError, match=f"blob {reference} is missing"):
        store.link(reference)


TRAVERSALS = [
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "ab/../../outside.dcm",
    "ab/" + "ab" * 16 + ".dcm/../../x",
    "",
    "ab\\" + "ab" * 16 + ".dcm",
]


@pytest.mark.parametrize("reference", TRAVERSALS)
def test_references_outside_the_store_are_refused(store: DirectoryBlobStore, reference: str) -> None:
    with pytest.raises(BlobStoreError, match="invalid blob reference"):
        store.path(reference)


@pytest.mark.parametrize("reference", TRAVERSALS)
def test_get_link_and_delete_refuse_references_outside_the_store(
    store: DirectoryBlobStore, reference: str, tmp_path: Path
) -> None:
    victim = tmp_path / "outside.dcm"
    victim.write_bytes(b"do not touch")

    for operation in (store.get, store.link, store.delete):
        with pytest.raises(BlobStoreError):
            operation(reference)

    assert victim.read_bytes() == b"do not touch"


def test_absolute_path_to_a_real_blob_is_still_refused(store: DirectoryBlobStore) -> None:
    reference = store.put(DATA)

    with pytest.raises(BlobStoreError):
        store.get(str(store.path(reference)))


def test_disk_full_says_the_store_is_full_and_leaves_no_partial_file(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = []

    def write_until_full(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:1000]))  # part of it fits, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_until_full)

    with pytest.raises(BlobStoreError) as caught:
        store.put(DATA)
    monkeypatch.undo()

    assert "full" in str(caught.value)
    assert str(store.root) in str(caught.value)
    assert len(calls) == 2
    assert files_under(store.root) == []


def test_other_write_errors_are_blob_store_errors_with_the_cause(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_write(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", failing_write)

    with pytest.raises(BlobStoreError, match="Input/output error"):
        store.put(DATA)
    monkeypatch.undo()

    assert files_under(store.root) == []


def test_ensure_creates_the_root(tmp_path: Path) -> None:
    store = DirectoryBlobStore(tmp_path / "a" / "b")

    store.ensure()

    assert (tmp_path / "a" / "b").is_dir()


def test_a_written_blob_is_readable_before_and_after_its_sync(store: DirectoryBlobStore) -> None:
    blob = store.write(DATA)

    assert store.get(blob.reference) == DATA
    assert blob.sync() == blob.reference
    assert store.get(blob.reference) == DATA


def test_a_discarded_blob_is_gone_synced_or_not(store: DirectoryBlobStore) -> None:
    unsynced, synced = store.write(DATA), store.write(DATA)
    synced.sync()

    unsynced.discard()
    synced.discard()

    assert files_under(store.root) == []


def test_a_failed_sync_keeps_the_file_for_the_caller_to_decide(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = store.write(DATA)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(BlobStoreError, match="Input/output error"):
        blob.sync()
    monkeypatch.undo()

    assert files_under(store.root) == [store.path(blob.reference)]
    with pytest.raises(BlobStoreError, match="already synced or discarded"):
        blob.sync()


def test_a_folder_removed_behind_the_stores_back_is_made_again(
    store: DirectoryBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = iter(["ab" + "0" * 30, "ab" + "1" * 30, "ab" + "2" * 30])
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(next(names)))
    first = store.put(DATA)
    store.path(first).unlink()
    store.path(first).parent.rmdir()  # an operator's clean-up: the store still thinks the folder exists

    second = store.put(DATA)
    linked = store.link(second)

    assert store.get(second) == DATA == store.get(linked)
