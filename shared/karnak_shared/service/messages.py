"""The typed messages handlers take, read from what the broker delivered (no pika, no delivery tags).

Reading is where the poison-message rule starts: a message that cannot be read (a bad envelope, a blob
reference that is not the store's, a missing blob, bytes that are not DICOM) raises `Unreadable` with
its own cause, and the runner parks it at once instead of requeueing it until RabbitMQ's delivery limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol, TypeVar

from karnak_dicom.instance import Source
from karnak_shared.blobstore import BlobSource, BlobStore
from karnak_shared.envelope import Envelope, ShareRequest, TransferEvent, attempt_of
from karnak_shared.errors import (
    BlobDigestMismatch,
    BlobMissing,
    BlobStoreError,
    EnvelopeError,
    InvalidBlobReference,
    KarnakError,
)
from karnak_shared.service.authentication import stream_digest

_PART10_MAGIC = slice(128, 132)


class Unreadable(KarnakError):
    """A message that no handler can work on: parked at once, with `cause` as its short name."""

    def __init__(self, cause: str, reason: str) -> None:
        self.cause = cause
        self.reason = reason
        super().__init__(f"{cause}: {reason}")


@dataclass(frozen=True)
class Received:
    """What the broker delivered, as the runtime hands it to message readers."""

    queue: str
    headers: dict[str, Any]
    body: bytes
    exchange: str = ""
    routing_key: str = ""

    @property
    def attempt(self) -> int:
        return attempt_of(self.headers)


@dataclass(frozen=True)
class Reading:
    """How a message is read: where blobs are, and whether blob digests are checked (authentication on)."""

    blobs: BlobStore
    check_digest: bool = False


M_co = TypeVar("M_co", covariant=True)


class MessageReader(Protocol[M_co]):
    """A message type: `read` turns what was delivered into it, or raises `Unreadable`."""

    def read(self, received: Received, reading: Reading) -> M_co: ...


@dataclass(frozen=True)
class InstanceMessage:
    """A DICOM instance with its envelope: the bytes inline in `body`, or in the blob `envelope.blob`."""

    envelope: Envelope
    body: bytes
    queue: str
    blobs: BlobStore = field(repr=False)
    # The blob's file or object source, made once when the message is read: every open of one handling
    # goes through it (an object store's source may keep a small blob between them).
    blob_source: Path | BlobSource | None = field(default=None, repr=False, compare=False)
    kind: ClassVar[str] = "instance"

    @property
    def blob(self) -> str | None:
        return self.envelope.blob

    @property
    def attempt(self) -> int:
        return self.envelope.attempt

    def source(self) -> Source:
        """Where the Part 10 bytes are: the body, or the blob's file or object (checked to exist when read)."""
        if not self.envelope.blob:
            return self.body
        return self.blob_source if self.blob_source is not None else self.blobs.source(self.envelope.blob)

    def read_bytes(self) -> bytes:
        """The Part 10 bytes (`BlobStoreError` when the blob cannot be read)."""
        return self.blobs.get(self.envelope.blob) if self.envelope.blob else self.body

    @classmethod
    def read(cls, received: Received, reading: Reading) -> InstanceMessage:
        try:
            envelope = Envelope.from_headers(received.headers)
        except EnvelopeError as exc:
            raise Unreadable("invalid-envelope", str(exc)) from None
        if envelope.blob is None:
            if not received.body:
                raise Unreadable("invalid-instance", "message has neither a body nor a blob reference")
            head, source = received.body[:132], None
        else:
            head, source = _blob_head(envelope, reading)
        if head[_PART10_MAGIC] != b"DICM":
            raise Unreadable("not-dicom", "the bytes are not a DICOM Part 10 instance (no 'DICM' at offset 128)")
        return cls(envelope, received.body, received.queue, reading.blobs, source)


def _blob_head(envelope: Envelope, reading: Reading) -> tuple[bytes, Path | BlobSource]:
    """The first bytes of a message's blob and its source, after checking its reference and (when asked) its
    digest."""
    reference = str(envelope.blob)
    try:
        if reading.check_digest and not envelope.digest:
            raise Unreadable("unauthenticated", "the message names a blob but carries no digest of it")
        source = reading.blobs.source(reference)
        with _open(source) as handle:
            head = handle.read(132)
            if reading.check_digest:
                handle.seek(0)
                if stream_digest(handle) != envelope.digest:
                    raise BlobDigestMismatch(f"blob {reference} does not have the digest the message was signed with")
            return head, source
    except InvalidBlobReference as exc:
        raise Unreadable("invalid-blob-reference", str(exc)) from None
    except (BlobMissing, FileNotFoundError):
        raise Unreadable("missing-blob", str(BlobMissing(f"blob {reference} is missing from the blob store"))) from None
    except BlobDigestMismatch as exc:
        raise Unreadable("blob-digest-mismatch", str(exc)) from None
    except OSError as exc:
        # The store, not the message: an I/O error is tried again.
        raise BlobStoreError(f"cannot read blob {reference}: {exc.strerror}") from None


def _open(source: Path | BlobSource) -> BinaryIO:
    return source.open("rb") if isinstance(source, Path) else source.open()


@dataclass(frozen=True)
class ShareMessage:
    """A `kheops.share` request with the number of times it was tried before."""

    request: ShareRequest
    attempt: int
    kind: ClassVar[str] = "share"

    @classmethod
    def read(cls, received: Received, reading: Reading) -> ShareMessage:
        try:
            return cls(ShareRequest.from_body(received.body), received.attempt)
        except EnvelopeError as exc:
            raise Unreadable("invalid-share-request", str(exc)) from None


@dataclass(frozen=True)
class EventMessage:
    """A `transfer.*` event as delivered (the notifier's input)."""

    event: TransferEvent
    routing_key: str
    kind: ClassVar[str] = "event"

    @classmethod
    def read(cls, received: Received, reading: Reading) -> EventMessage:
        try:
            return cls(TransferEvent.from_body(received.body), received.routing_key)
        except EnvelopeError as exc:
            raise Unreadable("invalid-event", str(exc)) from None
