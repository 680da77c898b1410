"""Where an instance's bytes travel: inline in the message body, or in the blob store by reference."""

from __future__ import annotations

from collections.abc import Sequence

from karnak_dicom.instance import Source
from karnak_shared.blobstore import BlobStore
from karnak_shared.envelope import Envelope
from karnak_shared.errors import InvalidInstance


def store_payload(data: bytes | Sequence[bytes], store: BlobStore, max_inline_bytes: int) -> tuple[bytes, str | None]:
    """The message body and blob reference for `data` (whole or in parts): inline up to `max_inline_bytes`."""
    parts = (data,) if isinstance(data, bytes) else data
    if sum(len(part) for part in parts) <= max_inline_bytes:
        return b"".join(parts), None
    return b"", store.put(parts)


def payload_source(envelope: Envelope, body: bytes, store: BlobStore) -> Source:
    """Where a message's Part 10 bytes are: its body, or its blob's file or object."""
    if envelope.blob:
        return store.source(envelope.blob)  # opening it says whether it is missing
    if not body:
        raise InvalidInstance("message has neither a body nor a blob reference")
    return body


def read_payload(envelope: Envelope, body: bytes, store: BlobStore) -> bytes:
    """The Part 10 bytes of a message, from its body or its blob (`BlobStoreError` when missing)."""
    source = payload_source(envelope, body, store)
    return source if isinstance(source, bytes) else store.get(str(envelope.blob))
