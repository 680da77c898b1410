"""Where an instance's bytes travel: inline in the message body, or in the blob store by reference."""

from __future__ import annotations

from karnak_shared.blobstore import BlobStore
from karnak_shared.envelope import Envelope
from karnak_shared.errors import InvalidInstance


def store_payload(data: bytes, store: BlobStore, max_inline_bytes: int) -> tuple[bytes, str | None]:
    """The message body and blob reference for `data`: inline up to `max_inline_bytes`, else a blob."""
    if len(data) <= max_inline_bytes:
        return data, None
    return b"", store.put(data)


def read_payload(envelope: Envelope, body: bytes, store: BlobStore) -> bytes:
    """The Part 10 bytes of a message, from its body or its blob (`BlobStoreError` when missing)."""
    if envelope.blob:
        return store.get(envelope.blob)
    if not body:
        raise InvalidInstance("message has neither a body nor a blob reference")
    return body
