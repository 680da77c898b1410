"""The blob store: instances larger than `max_inline_bytes` travel as files, not message bodies.

It is a directory shared by the services (a volume in compose, a ReadWriteMany volume on Kubernetes).
A blob and its directory entry are fsynced before the work that made it is acknowledged (a C-STORE
answered, an input message acked), so an acknowledged instance never rests on a blob that a crash could
lose; a crash while writing leaves at most a stray file.
References are relative paths (``ab/<uuid>.dcm``) checked against path traversal.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from karnak_shared.errors import BlobMissing, BlobStoreError, InvalidBlobReference

_T = TypeVar("_T")
_REFERENCE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.dcm$")


class BlobStore:
    """Write-once files under one root directory, addressed by opaque references."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._folders: set[str] = set()

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
        if not _REFERENCE.match(reference):
            raise InvalidBlobReference(f"invalid blob reference {reference[:80]!r}")
        return self.root / reference

    def _new_reference(self) -> tuple[str, Path]:
        name = uuid.uuid4().hex
        reference = f"{name[:2]}/{name}.dcm"
        target = self.root / reference
        if name[:2] not in self._folders:  # 256 folders: a mkdir per blob cost a syscall for nothing
            self._make_folder(target.parent)
            self._folders.add(name[:2])
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
        try:
            return self.path(reference).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {reference} is missing from {self.root}") from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None

    def delete(self, reference: str) -> None:
        """Remove a blob; a blob already gone is not an error (deletes follow acks and may repeat)."""
        try:
            self.path(reference).unlink(missing_ok=True)
        except OSError as exc:
            raise BlobStoreError(f"cannot delete blob {reference}: {exc.strerror}") from None

    @staticmethod
    def _sync_directory(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class UnsyncedBlob:
    """A blob whose bytes are written but perhaps not yet on disk; `sync` or `discard` it exactly once."""

    def __init__(self, store: BlobStore, reference: str, path: Path, fd: int) -> None:
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
            BlobStore._sync_directory(self._path.parent)
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
