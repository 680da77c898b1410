"""STOW-RS requests: the multipart body of a batch (the runtime forms the batches: tests/shared/service)."""

from __future__ import annotations

import email.parser
from types import SimpleNamespace

import pytest

from karnak_stow_sender.multipart import encode_related

# --- multipart -----------------------------------------------------------------------------------------


def test_the_body_is_multipart_related_with_each_instance_as_an_application_dicom_part_unchanged() -> None:
    parts = [b"DICM-one\r\n--not-a-boundary", bytes(range(256)) * 10]
    body, content_type = encode_related(parts)
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    payloads = [part.get_payload(decode=True) for part in message.get_payload()]  # type: ignore[union-attr]
    assert payloads == parts
    assert all(part.get_content_type() == "application/dicom" for part in message.get_payload())  # type: ignore[union-attr]


def test_a_boundary_that_occurs_in_an_instance_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = iter(["aaaa", "bbbb"])
    monkeypatch.setattr("karnak_stow_sender.multipart.uuid.uuid4", lambda: SimpleNamespace(hex=next(candidates)))
    body, content_type = encode_related([b"pixels--karnak-aaaa-pixels"])
    assert content_type.endswith("boundary=karnak-bbbb")
    assert (
        body
        == b"--karnak-bbbb\r\nContent-Type: application/dicom\r\n\r\npixels--karnak-aaaa-pixels\r\n--karnak-bbbb--\r\n"
    )


def test_a_request_needs_an_instance() -> None:
    with pytest.raises(ValueError):
        encode_related([])
