"""Message authentication: an HMAC-SHA256 over a message's own headers and its body (issue 18).

Anyone holding broker credentials could otherwise publish straight to a send queue and reach a PACS,
bypassing conditions and de-identification. Every message a service publishes carries
`karnak-signature`: HMAC-SHA256, keyed by `secrets.key`, over its `karnak-*` headers (sorted, as text)
and the SHA-256 of its body. An instance that travels as a blob has an empty body and its blob's
SHA-256 in `karnak-digest`, which the signature covers; the consumer checks the blob against it.
The retry tier and the `x-karnak-*` parking headers are not covered: the delay queues and parking add
them, and a parked message keeps the signature it was sent with.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

from karnak_shared import header_names

_UNSIGNED = frozenset({header_names.SIGNATURE, header_names.RETRY_TIER})
_CHUNK = 1 << 20


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _material(headers: Mapping[str, Any], body: bytes) -> bytes:
    signed = sorted(
        (name, _text(value))
        for name, value in headers.items()
        if name.startswith(header_names.PREFIX) and name not in _UNSIGNED
    )
    return json.dumps(signed, separators=(",", ":")).encode() + b"\n" + hashlib.sha256(body).digest()


def digest_of(parts: bytes | Iterable[bytes]) -> str:
    """SHA-256 (hex) of bytes given whole or in parts (the receiver's file meta and dataset)."""
    sha = hashlib.sha256()
    for part in (parts,) if isinstance(parts, bytes | bytearray | memoryview) else parts:
        sha.update(part)
    return sha.hexdigest()


def stream_digest(stream: BinaryIO) -> str:
    """SHA-256 (hex) of a stream (a blob's file or object) from where it stands to its end, read in chunks:
    a 300 MB instance is never held whole for this."""
    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


class Signer:
    """Signs and checks messages with the gateway's key; without a key, signs nothing and accepts all."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def signature(self, headers: Mapping[str, Any], body: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, _material(headers, body), hashlib.sha256).hexdigest()

    def sign(self, headers: Mapping[str, Any], body: bytes) -> dict[str, Any]:
        """`headers` with the signature of (headers, body) set (replacing an older one)."""
        signed = dict(headers)
        if self._key is not None:
            signed[header_names.SIGNATURE] = self.signature(signed, body)
        return signed

    def check(self, headers: Mapping[str, Any], body: bytes) -> bool:
        """Whether the message carries a valid signature (always True without a key)."""
        if self._key is None:
            return True
        given = headers.get(header_names.SIGNATURE)
        if not given:
            return False
        return hmac.compare_digest(_text(given), self.signature(headers, body))
