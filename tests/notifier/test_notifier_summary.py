"""The per-study summary of a window: series, counts sent/failed/rejected, distinct reasons."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from karnak_notifier.summary import Reason, split_by_study, summarize_study
from karnak_notifier.window import Held
from karnak_shared.envelope import TransferEvent

STUDY = "2.25.1001"
DISPLAY = {"PatientID": "PSEUDO-7F3A", "StudyDescription": "BRAIN MRI", "StudyDate": "20260101"}


def event(
    kind: Literal["sent", "failed", "rejected"],
    sop: str,
    series: str = "2.25.1001.1",
    *,
    study: str | None = STUDY,
    reason: str | None = None,
    series_description: str = "T1 AXIAL",
    **display: Any,
) -> TransferEvent:
    return TransferEvent(
        kind=kind,
        destination="research-pacs",
        forward_node="KARNAK-GW",
        instance_id=f"id-{sop}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=series,
        reason=reason,
        received_at=0.0,
        display={**DISPLAY, "SeriesDescription": series_description, **display},
    )


def test_counts_are_per_series_and_outcome() -> None:
    summary = summarize_study(
        [
            event("sent", "1", "s1", series_description="T1"),
            event("sent", "2", "s1", series_description="T1"),
            event("failed", "3", "s1", series_description="T1", reason="0xA900 refused"),
            event("rejected", "4", "s2", series_description="SCOUT", reason="condition is false"),
            event("sent", "5", "s3", series_description="DWI"),
        ]
    )
    assert [(s.series_uid, s.description, s.sent, s.failed, s.rejected) for s in summary.series] == [
        ("s1", "T1", 2, 1, 0),
        ("s2", "SCOUT", 0, 0, 1),
        ("s3", "DWI", 1, 0, 0),
    ]
    assert (summary.sent, summary.failed, summary.rejected) == (3, 1, 1)


def test_study_values_come_from_the_events_display_values() -> None:
    summary = summarize_study([event("sent", "1")])
    assert summary.destination == "research-pacs"
    assert summary.forward_node == "KARNAK-GW"
    assert summary.study_uid == STUDY
    assert (summary.patient_id, summary.study_description, summary.study_date) == (
        "PSEUDO-7F3A",
        "BRAIN MRI",
        "20260101",
    )
    assert summary.value("StudyInstanceUID") == STUDY


def test_a_value_missing_from_the_first_event_is_taken_from_a_later_one() -> None:
    summary = summarize_study([event("sent", "1", StudyDescription=""), event("sent", "2", StudyDescription="LATE")])
    assert summary.study_description == "LATE"


def test_missing_values_are_empty() -> None:
    bare = TransferEvent(
        kind="sent",
        destination="d",
        forward_node="N",
        instance_id="i",
        sop_class_uid="1.2",
        sop_instance_uid="1.2.3",
        received_at=0.0,
    )
    summary = summarize_study([bare])
    assert (summary.patient_id, summary.study_description, summary.study_date, summary.study_uid) == ("", "", "", None)
    assert summary.series[0].description == ""


def test_distinct_reasons_are_listed_once_in_order_of_appearance() -> None:
    summary = summarize_study(
        [
            event("failed", "1", reason="PACS answered 0xA900"),
            event("failed", "2", reason="PACS answered 0xA900"),
            event("rejected", "3", reason="condition is false"),
            event("failed", "4", reason="PACS answered 0xC000"),
        ]
    )
    assert summary.series[0].reasons == (
        Reason("failed", "PACS answered 0xA900"),
        Reason("rejected", "condition is false"),
        Reason("failed", "PACS answered 0xC000"),
    )


def test_each_reason_is_cut_at_200_characters_and_reasons_equal_after_the_cut_are_one() -> None:
    long_reason = "x" * 250
    summary = summarize_study(
        [event("failed", "1", reason=long_reason), event("failed", "2", reason=long_reason[:200] + "different tail")]
    )
    (reason,) = summary.series[0].reasons
    assert reason.text == "x" * 200


def test_a_series_lists_at_most_twenty_reasons_and_counts_the_others() -> None:
    summary = summarize_study([event("failed", str(i), reason=f"reason {i}") for i in range(25)])
    series = summary.series[0]
    assert len(series.reasons) == 20
    assert series.more_reasons == 5
    assert series.failed == 25


def test_an_event_delivered_twice_counts_once() -> None:
    summary = summarize_study([event("sent", "1"), event("sent", "1"), event("failed", "2", reason="r")])
    assert (summary.sent, summary.failed) == (1, 1)


def test_the_same_instance_failed_then_sent_counts_in_both() -> None:
    summary = summarize_study([event("failed", "1", reason="r"), event("sent", "1")])
    assert (summary.sent, summary.failed) == (1, 1)


def test_a_summary_needs_an_event() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        summarize_study([])


def test_a_window_splits_into_studies_in_order_of_first_appearance() -> None:
    held = [
        Held(event("sent", "1", study="2.25.2"), "a"),
        Held(event("sent", "2", study="2.25.1"), "b"),
        Held(event("failed", "3", study="2.25.2", reason="r"), "c"),
    ]
    groups = split_by_study(held)
    assert [(g.study_uid, [h.token for h in g.held]) for g in groups] == [("2.25.2", ["a", "c"]), ("2.25.1", ["b"])]
