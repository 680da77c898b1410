"""Interval windows per destination: opened by the first event, closed `interval` seconds later."""

from __future__ import annotations

from typing import Literal

from karnak_notifier.window import Windows
from karnak_shared.envelope import TransferEvent


def event(
    destination: str = "pacs", sop: str = "1.2.3.1", kind: Literal["sent", "failed", "rejected"] = "sent"
) -> TransferEvent:
    return TransferEvent(
        kind=kind,
        destination=destination,
        forward_node="KARNAK-GW",
        instance_id=f"id-{sop}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=sop,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.0",
        received_at=0.0,
    )


def test_the_window_opens_at_the_first_event_and_closes_interval_seconds_later() -> None:
    windows: Windows[str] = Windows({"pacs": 45})
    windows.add(event(sop="1"), "t1", now=100.0)
    windows.add(event(sop="2"), "t2", now=130.0)
    assert windows.next_deadline() == 145.0
    assert windows.close_due(144.9) == []
    (closed,) = windows.close_due(145.0)
    assert closed.destination == "pacs"
    assert [h.token for h in closed.held] == ["t1", "t2"]
    assert windows.next_deadline() is None


def test_an_event_after_the_window_closed_opens_a_new_window() -> None:
    windows: Windows[str] = Windows({"pacs": 10})
    assert windows.add(event(sop="1"), "t1", now=0.0)
    assert not windows.add(event(sop="1b"), "t1b", now=9.9)
    assert windows.add(event(sop="2"), "t2", now=10.0)  # the first window is over, though not yet collected
    first, *rest = windows.close_due(10.0)
    assert [h.token for h in first.held] == ["t1", "t1b"]
    assert rest == []
    assert windows.next_deadline() == 20.0
    (second,) = windows.close_due(20.0)
    assert [h.token for h in second.held] == ["t2"]


def test_each_destination_has_its_own_window_and_interval() -> None:
    windows: Windows[str] = Windows({"pacs": 10, "archive": 30})
    windows.add(event("archive", sop="1"), "a1", now=0.0)
    windows.add(event("pacs", sop="2"), "p1", now=5.0)
    assert windows.next_deadline() == 15.0
    assert [w.destination for w in windows.close_due(15.0)] == ["pacs"]
    assert windows.is_open("archive")
    assert [w.destination for w in windows.close_due(30.0)] == ["archive"]


def test_windows_closed_together_come_out_earliest_first() -> None:
    windows: Windows[str] = Windows({"pacs": 10, "archive": 5})
    windows.add(event("pacs", sop="1"), "p", now=0.0)
    windows.add(event("archive", sop="2"), "a", now=1.0)
    assert [w.destination for w in windows.close_due(100.0)] == ["archive", "pacs"]


def test_only_destinations_with_notifications_are_aggregated() -> None:
    windows: Windows[str] = Windows({"pacs": 10})
    assert windows.accepts("pacs")
    assert not windows.accepts("other")


def test_held_counts_and_discarding_everything() -> None:
    windows: Windows[str] = Windows({"pacs": 10})
    windows.add(event(sop="1"), "t1", now=0.0)
    windows.add(event(sop="2"), "t2", now=1.0)
    windows.add(event(sop="3"), "t3", now=12.0)  # a second window; the first waits to be collected
    assert windows.held_count("pacs") == 3
    assert windows.discard_all() == 3
    assert windows.held_count("pacs") == 0
    assert windows.close_due(100.0) == []
    assert windows.next_deadline() is None
