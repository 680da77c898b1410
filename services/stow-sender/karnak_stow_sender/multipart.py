"""The body of a STOW-RS request: Part 10 instances in one ``multipart/related`` message (PS3.18 10.5)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

DICOM_PART = "application/dicom"


def encode_related(parts: Sequence[bytes], boundary: str | None = None) -> tuple[bytes, str]:
    """The body and its Content-Type for `parts`, each sent as an ``application/dicom`` part unchanged."""
    if not parts:
        raise ValueError("a STOW-RS request needs at least one instance")
    chosen = boundary or _boundary_not_in(parts)
    delimiter = f"--{chosen}".encode("ascii")
    part_header = b"\r\nContent-Type: " + DICOM_PART.encode("ascii") + b"\r\n\r\n"
    chunks: list[bytes] = []
    for part in parts:
        chunks += [delimiter, part_header, part, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    content_type = f'multipart/related; type="{DICOM_PART}"; boundary={chosen}'
    return b"".join(chunks), content_type


def _boundary_not_in(parts: Sequence[bytes]) -> str:
    # A random boundary of 128 bits practically never occurs in pixel data; checking makes it never.
    while True:
        boundary = f"karnak-{uuid.uuid4().hex}"
        needle = boundary.encode("ascii")
        if not any(needle in part for part in parts):
            return boundary
