"""STOW-RS batches: the multipart body, and grouping deliveries of one study with size, byte and time limits."""

from __future__ import annotations

import email.parser
import queue
import threading
import time
from types import SimpleNamespace

import pytest

from karnak_shared.broker import Delivery
from karnak_stow_sender.batching import BatchLimits, StudyBatcher
from karnak_stow_sender.multipart import encode_related


def delivery(study: str | None, tag: int, size: int = 1000) -> Delivery:
    headers: dict[str, object] = {"karnak-size": size}
    if study is not None:
        headers["karnak-study-instance-uid"] = study.encode()  # pika hands header strings over as bytes
    return Delivery("q", "q", tag, False, headers, b"", 1)


def tags(batch: list[Delivery] | None) -> list[int]:
    assert batch is not None
    return [d.delivery_tag for d in batch]


def batcher(
    items: list[Delivery | None], size: int = 3, max_wait: float = 0.05, max_bytes: int = 10**9
) -> StudyBatcher:
    inbox: queue.Queue[Delivery | None] = queue.Queue()
    for item in items:
        inbox.put(item)
    return StudyBatcher(inbox, BatchLimits(size, max_wait, max_bytes))


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


# --- batching ------------------------------------------------------------------------------------------


def test_deliveries_of_one_study_form_batches_of_at_most_the_batch_size() -> None:
    b = batcher([delivery("S1", i) for i in range(1, 8)], size=3)
    assert tags(b.next_batch(0.1)) == [1, 2, 3]
    assert tags(b.next_batch(0.1)) == [4, 5, 6]
    assert tags(b.next_batch(0.1)) == [7]
    assert b.next_batch(0.01) == []


def test_other_studies_wait_for_the_next_batch_in_arrival_order() -> None:
    b = batcher([delivery("S1", 1), delivery("S2", 2), delivery("S1", 3), delivery("S3", 4), delivery("S2", 5)])
    assert tags(b.next_batch(0.1)) == [1, 3]
    assert tags(b.next_batch(0.1)) == [2, 5]
    assert tags(b.next_batch(0.1)) == [4]


def test_a_batch_waits_up_to_max_wait_for_more_of_its_study() -> None:
    inbox: queue.Queue[Delivery | None] = queue.Queue()
    b = StudyBatcher(inbox, BatchLimits(size=5, max_wait=1.0, max_bytes=10**9))
    inbox.put(delivery("S1", 1))
    threading.Timer(0.1, lambda: inbox.put(delivery("S1", 2))).start()
    started = time.monotonic()
    assert tags(b.next_batch(1)) == [1, 2]
    assert time.monotonic() - started >= 0.9  # it kept waiting for the rest until max_wait


def test_a_full_batch_goes_out_without_waiting() -> None:
    b = batcher([delivery("S1", i) for i in range(1, 4)], size=3, max_wait=5)
    started = time.monotonic()
    assert tags(b.next_batch(0.1)) == [1, 2, 3]
    assert time.monotonic() - started < 1


def test_a_batch_stops_growing_at_the_byte_limit() -> None:
    b = batcher([delivery("S1", i, size=400) for i in range(1, 5)], size=10, max_bytes=1000)
    assert tags(b.next_batch(0.1)) == [1, 2]
    assert tags(b.next_batch(0.1)) == [3, 4]


def test_a_delivery_without_a_study_goes_alone() -> None:
    b = batcher([delivery(None, 1), delivery(None, 2)])
    assert tags(b.next_batch(0.1)) == [1]
    assert tags(b.next_batch(0.1)) == [2]


def test_stop_hands_out_what_is_waiting_then_none() -> None:
    b = batcher([delivery("S1", 1), delivery("S2", 2), None, delivery("S1", 3)])
    assert tags(b.next_batch(0.1)) == [1]
    assert tags(b.next_batch(0.1)) == [2]
    assert b.next_batch(0.1) is None
    assert b.stopping


def test_threads_sharing_a_batcher_get_disjoint_batches_of_one_study_each() -> None:
    items: list[Delivery | None] = [delivery(f"S{i % 3}", i) for i in range(1, 61)]
    b = batcher([*items, None, None], size=4, max_wait=0.01)
    seen: list[list[Delivery]] = []
    lock = threading.Lock()

    def take() -> None:
        while (batch := b.next_batch(0.1)) is not None:
            with lock:
                seen.append(batch)

    threads = [threading.Thread(target=take) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    flat = sorted(d.delivery_tag for batch in seen for d in batch)
    assert flat == list(range(1, 61))
    assert all(len({d.headers["karnak-study-instance-uid"] for d in batch}) == 1 for batch in seen)
    assert all(len(batch) <= 4 for batch in seen)
