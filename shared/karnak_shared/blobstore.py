"""The blob store: instances larger than `max_inline_bytes` travel as files, not message bodies.

It is a directory shared by the services (a volume in compose, a ReadWriteMany volume on Kubernetes).
A blob is written to a temporary name, fsynced and renamed, and its directory fsynced, before its
reference is published, so a confirmed message never points at a blob that a crash could lose.
References are relative paths (``ab/<uuid>.dcm``) checked against path traversal.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

from karnak_shared.errors import BlobMissing, BlobStoreError

_REFERENCE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{32}\.dcm$")


class BlobStore:
    """Write-once files under one root directory, addressed by opaque references."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

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
            raise BlobStoreError(f"invalid blob reference {reference!r}")
        return self.root / reference

    def _new_reference(self) -> tuple[str, Path]:
        name = uuid.uuid4().hex
        reference = f"{name[:2]}/{name}.dcm"
        target = self.root / reference
        target.parent.mkdir(parents=True, exist_ok=True)
        return reference, target

    def put(self, data: bytes | Sequence[bytes]) -> str:
        """Store bytes durably and return their reference.

        `data` may come in parts (a header and a large body, say), written one after the other so that
        the caller need not join them into one more copy.
        """
        try:
            reference, target = self._new_reference()
            temporary = target.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                for part in (data,) if isinstance(data, bytes | bytearray | memoryview) else data:
                    view = memoryview(part)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, target)
            self._sync_directory(target.parent)
            return reference
        except OSError as exc:
            try:
                temporary.unlink(missing_ok=True)
            except (OSError, UnboundLocalError):
                pass
            if exc.errno == errno.ENOSPC:
                raise BlobStoreError(f"blob store {self.root} is full (no space left on device)") from None
            raise BlobStoreError(f"cannot write to the blob store {self.root}: {exc.strerror}") from None

    def link(self, reference: str) -> str:
        """A second, independent reference to the same bytes (a hard link: no copy, deleted separately)."""
        source = self.path(reference)
        try:
            new_reference, target = self._new_reference()
            os.link(source, target)
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
