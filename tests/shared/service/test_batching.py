"""The runtime's batcher: messages of one key in batches bounded by count, weight and time."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

from karnak_shared.service.batching import Batcher, BatchLimits


@dataclass(frozen=True)
class Item:
    study: str | None
    tag: int
    size: int = 1000


Inbox = queue.Queue[Item | None]


def delivery(study: str | None, tag: int, size: int = 1000) -> Item:
    return Item(study, tag, size)


def tags(batch: list[Item] | None) -> list[int]:
    assert batch is not None
    return [d.tag for d in batch]


def study_batcher(inbox: Inbox, limits: BatchLimits) -> Batcher[Item, Item]:
    return Batcher(inbox, lambda item: item, lambda item: item.study, lambda item: item.size, lambda: limits)


def batcher(
    items: list[Item | None], size: int = 3, max_wait: float = 0.05, max_bytes: int = 10**9
) -> Batcher[Item, Item]:
    inbox: Inbox = queue.Queue()
    for item in items:
        inbox.put(item)
    return study_batcher(inbox, BatchLimits(size, max_wait, max_bytes))


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
    inbox: Inbox = queue.Queue()
    b = study_batcher(inbox, BatchLimits(size=5, max_wait=1.0, max_weight=10**9))
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
    items: list[Item | None] = [delivery(f"S{i % 3}", i) for i in range(1, 61)]
    b = batcher([*items, None, None], size=4, max_wait=0.01)
    seen: list[list[Item]] = []
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
    flat = sorted(d.tag for batch in seen for d in batch)
    assert flat == list(range(1, 61))
    assert all(len({d.study for d in batch}) == 1 for batch in seen)
    assert all(len(batch) <= 4 for batch in seen)


def test_a_message_settled_when_admitted_is_skipped() -> None:
    inbox: Inbox = queue.Queue()
    for item in (delivery("S1", 1), delivery("S1", 2), delivery("S1", 3)):
        inbox.put(item)
    limits = BatchLimits(3, 0.05)
    b: Batcher[Item, Item] = Batcher(
        inbox, lambda item: None if item.tag == 2 else item, lambda item: item.study, lambda item: 0, lambda: limits
    )
    assert tags(b.next_batch(0.1)) == [1, 3]


def test_the_limits_are_read_for_each_batch() -> None:
    inbox: Inbox = queue.Queue()
    for n in range(1, 6):
        inbox.put(delivery("S1", n))
    limits = [BatchLimits(2, 0.01)]
    b: Batcher[Item, Item] = Batcher(inbox, lambda i: i, lambda i: i.study, lambda i: 0, lambda: limits[0])
    assert tags(b.next_batch(0.1)) == [1, 2]
    limits[0] = BatchLimits(3, 0.01)
    assert tags(b.next_batch(0.1)) == [3, 4, 5]
