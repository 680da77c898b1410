"""The blob store: instances larger than `max_inline_bytes` travel as blobs, not message bodies.

Two stores keep one contract (`BlobStore`): a directory shared by the services (a volume in compose, a
ReadWriteMany volume on Kubernetes; `DirectoryBlobStore`, here) or an S3-compatible bucket
(`karnak_shared.blobstore_s3`). The contract:
- a blob is durable before the work that made it is acknowledged (a C-STORE answered, an input message
  acked), so an acknowledged instance never rests on a blob that a crash could lose; a crash while
  writing leaves at most a stray blob, which `karnak blobs sweep` finds;
- a blob is read as a stream (`open`, seekable): the header first, the pixel data as it is copied, never
  the whole instance in memory;
- each message names a blob of its own (`link` makes a second one without copying bytes through the
  service), deleted after the ack that ends its use; deleting a blob already gone is not an error;
- a blob the sweep set aside (`set_aside`) comes back when a message reads it: the sweep's one way to be
  wrong about a message it could not see (one being handled) costs nothing.
References are relative names (``ab/<uuid>.dcm``) checked before any file or object is touched.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar

from karnak_shared.errors import BlobMissing, BlobStoreError, InvalidBlobReference

if TYPE_CHECKING:
    from karnak_shared.config import BlobStoreConfig

_T = TypeVar("_T")
_REFERENCE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.dcm$")
# Where the sweep sets aside blobs no queued message named, under the store's root (or prefix).
SET_ASIDE = "swept"


def check_reference(reference: str) -> str:
    """`reference` if it is one of a store's; raise `InvalidBlobReference` before anything is touched."""
    if not _REFERENCE.match(reference):
        raise InvalidBlobReference(f"invalid blob reference {reference[:80]!r}")
    return reference


def is_reference(name: str) -> bool:
    """Whether `name` has the form of a reference (a listing's test: anything else is not the store's)."""
    return _REFERENCE.match(name) is not None


def new_reference() -> str:
    """A fresh reference: 256 folders (or key prefixes) of random names."""
    name = uuid.uuid4().hex
    return f"{name[:2]}/{name}.dcm"


@dataclass(frozen=True)
class StoredBlob:
    """A blob as a listing shows it: its reference, when it was last written (epoch seconds), its size."""

    reference: str
    modified: float
    size: int


class PendingBlob(Protocol):
    """A blob written but perhaps not yet durable: `sync` it (then name it in a message) or `discard` it."""

    @property
    def reference(self) -> str: ...

    def sync(self) -> str: ...

    def discard(self) -> None: ...


class BlobSource(Protocol):
    """Bytes kept by a store that has no file to give (an object store): read through a seekable stream."""

    def open(self) -> BinaryIO: ...


class BlobStore(Protocol):
    """What every blob store does (the module docstring's contract)."""

    @property
    def location(self) -> str:
        """Where the blobs are, for messages (a directory, or ``s3://bucket/prefix``; no credentials)."""
        ...

    def ensure(self) -> None:
        """Check the store is usable (create the directory; reach the bucket); `BlobStoreError` if not."""

    def put(self, data: bytes | Sequence[bytes]) -> str:
        """Store bytes (whole or in parts, never joined) durably and return their reference."""
        ...

    def write(self, data: bytes | Sequence[bytes]) -> PendingBlob:
        """Write bytes under a new reference; `sync()` the result before a message names it as durable."""
        ...

    def link(self, reference: str) -> str:
        """A second, independent reference to the same bytes, without copying them through this process."""
        ...

    def get(self, reference: str) -> bytes:
        """The whole bytes of a blob (small ones; large ones are `open`ed); `BlobMissing` when gone."""
        ...

    def open(self, reference: str) -> BinaryIO:
        """A seekable stream over a blob; `BlobMissing` when gone. Reads raise `OSError` with an errno."""
        ...

    def source(self, reference: str) -> Path | BlobSource:
        """What an instance reader opens: the blob's file, or a source of streams over it (one per message:
        it may keep a small blob between the opens of one handling)."""
        ...

    def delete(self, reference: str) -> None:
        """Remove a blob (and a set-aside copy of it); a blob already gone is not an error."""

    def blobs(self) -> Iterator[StoredBlob]:
        """Every blob in the store (not those set aside), in no particular order."""
        ...

    def set_aside(self, reference: str) -> None:
        """Move a blob out of the store's view (the sweep's first step); reading it brings it back."""

    def set_aside_blobs(self) -> Iterator[StoredBlob]:
        """The blobs set aside, `modified` being when they were set aside."""
        ...

    def purge(self, reference: str) -> None:
        """Remove a set-aside blob for good."""


def open_blob_store(config: BlobStoreConfig) -> BlobStore:
    """The store the configuration names: an S3 bucket with `url`, else the directory `path`."""
    if config.url is not None:
        from karnak_shared.blobstore_s3 import S3BlobStore  # boto3 is imported only by those who use it

        return S3BlobStore.from_config(config)
    return DirectoryBlobStore(config.path)


class DirectoryBlobStore:
    """Write-once files under one root directory, addressed by opaque references."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._folders: set[str] = set()

    @property
    def location(self) -> str:
        return str(self.root)

    def ensure(self) -> None:
        """Create the root directory if needed; raise `BlobStoreError` when it is not writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot create the blob store at {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise BlobStoreError(f"the blob store at {self.root} is not writable")

    def path(self, reference: str) -> Path:
        """The file of a reference; raise `BlobStoreError` for a reference that is not one of ours."""
        return self.root / check_reference(reference)

    def _new_reference(self) -> tuple[str, Path]:
        reference = new_reference()
        target = self.root / reference
        if reference[:2] not in self._folders:  # 256 folders: a mkdir per blob cost a syscall for nothing
            self._make_folder(target.parent)
            self._folders.add(reference[:2])
        return reference, target

    def put(self, data: bytes | Sequence[bytes]) -> str:
        """Store bytes durably and return their reference.

        `data` may come in parts (a header and a large body, say), written one after the other so that
        the caller need not join them into one more copy.
        """
        blob = self.write(data)
        try:
            return blob.sync()
        except BlobStoreError:
            blob.discard()
            raise

    def write(self, data: bytes | Sequence[bytes]) -> UnsyncedBlob:
        """Write bytes under a new reference without waiting for the disk: `sync()` the result before
        publishing anything that names it as durable.

        The file gets its final name at once: no message names it before `sync()` returned, so a crash
        in between leaves only a stray file, never a reference to a partial one.
        """
        target: Path | None = None
        try:
            reference, target = self._new_reference()
            fd = self._in_folder(target, lambda: os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
            try:
                for part in (data,) if isinstance(data, bytes | bytearray | memoryview) else data:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
            except BaseException:
                os.close(fd)
                raise
            return UnsyncedBlob(self, reference, target, fd)
        except OSError as exc:
            if target is not None:
                _remove_quietly(target)
            raise self._write_error(exc) from None

    def _make_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            self._sync_directory(self.root)  # the new folder's own entry must survive a crash too

    def _in_folder(self, target: Path, create: Callable[[], _T]) -> _T:
        """Run `create` (of `target`), recreating the folder if it went since we made it (an operator's purge)."""
        try:
            return create()
        except FileNotFoundError:
            if target.parent.exists():
                raise
        self._make_folder(target.parent)
        return create()

    def _write_error(self, exc: OSError) -> BlobStoreError:
        if exc.errno == errno.ENOSPC:
            return BlobStoreError(f"blob store {self.root} is full (no space left on device)")
        return BlobStoreError(f"cannot write to the blob store {self.root}: {exc.strerror}")

    def link(self, reference: str) -> str:
        """A second, independent reference to the same bytes (a hard link: no copy, deleted separately)."""
        source = self.path(reference)
        self._bring_back(reference)
        try:
            # The source may be one whose message was confirmed while its fsync was still running (the
            # receiver overlaps them): the link's message must not rest on bytes not yet on disk.
            fd = os.open(source, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            new_reference, target = self._new_reference()
            self._in_folder(target, lambda: os.link(source, target))
            self._sync_directory(target.parent)
            return new_reference
        except FileNotFoundError:
            raise BlobMissing(f"blob {reference} is missing from {self.root}") from None
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return self.put(self.get(reference))
            raise BlobStoreError(f"cannot link blob {reference}: {exc.strerror}") from None

    def get(self, reference: str) -> bytes:
        """The bytes of a reference; raise `BlobStoreError` when it is missing."""
        with self.open(reference) as stream:
            try:
                return stream.read()
            except OSError as exc:
                raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None

    def open(self, reference: str) -> BinaryIO:
        path = self.path(reference)
        try:
            try:
                return path.open("rb")
            except FileNotFoundError:
                if not self._bring_back(reference):
                    raise
                return path.open("rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {reference} is missing from {self.root}") from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None

    def source(self, reference: str) -> Path:
        path = self.path(reference)
        self._bring_back(reference)
        return path  # opening it says whether it is missing (`FileNotFoundError`)

    def delete(self, reference: str) -> None:
        """Remove a blob; a blob already gone is not an error (deletes follow acks and may repeat)."""
        try:
            self.path(reference).unlink(missing_ok=True)
            (self.root / SET_ASIDE / reference).unlink(missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {reference}: {exc.strerror}") from None

    def blobs(self) -> Iterator[StoredBlob]:
        yield from self._listed(self.root)

    def set_aside_blobs(self) -> Iterator[StoredBlob]:
        yield from self._listed(self.root / SET_ASIDE)

    def _listed(self, root: Path) -> Iterator[StoredBlob]:
        if not root.is_dir():
            return
        for folder in sorted(root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for file in folder.iterdir():
                reference = f"{folder.name}/{file.name}"
                if not is_reference(reference):
                    continue
                try:
                    status = file.stat()
                except FileNotFoundError:
                    continue  # deleted after its ack while we listed
                yield StoredBlob(reference, status.st_mtime, status.st_size)

    def set_aside(self, reference: str) -> None:
        source = self.path(reference)
        target = self.root / SET_ASIDE / reference
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.utime(source)  # its time in the set-aside folder counts from now
            os.rename(source, target)
        except FileNotFoundError:
            return  # deleted after its ack meanwhile
        except OSError as exc:
            raise BlobStoreError(f"cannot set blob {reference} aside: {exc.strerror}") from None

    def purge(self, reference: str) -> None:
        try:
            (self.root / SET_ASIDE / check_reference(reference)).unlink(missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot remove blob {reference}: {exc.strerror}") from None

    def _bring_back(self, reference: str) -> bool:
        """Return a blob the sweep set aside to its place; whether it is in place now (one stat if it was)."""
        target = self.root / reference
        if target.exists():
            return True
        aside = self.root / SET_ASIDE / reference
        try:
            os.rename(aside, target)
            return True
        except FileNotFoundError:
            return target.exists()  # another reader brought it back first, or it was never set aside
        except OSError as exc:
            raise BlobStoreError(f"cannot bring blob {reference} back: {exc.strerror}") from None

    @staticmethod
    def _sync_directory(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class UnsyncedBlob:
    """A blob whose bytes are written but perhaps not yet on disk; `sync` or `discard` it exactly once."""

    def __init__(self, store: DirectoryBlobStore, reference: str, path: Path, fd: int) -> None:
        self.reference = reference
        self._store = store
        self._path = path
        self._fd: int | None = fd

    def sync(self) -> str:
        """Make the blob durable (its bytes and its folder entry) and return its reference.

        On failure the file stays (a message may name it already): the caller `discard`s it if not.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            raise BlobStoreError(f"blob {self.reference} was already synced or discarded")
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            DirectoryBlobStore._sync_directory(self._path.parent)
        except OSError as exc:
            raise self._store._write_error(exc) from None
        return self.reference

    def discard(self) -> None:
        """Remove the blob, synced or not (nothing names it)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        _remove_quietly(self._path)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
