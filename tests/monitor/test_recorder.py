"""The monitor's tables as the console reads them: exact counts per series, once per event, privacy."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from karnak_monitor.queries import (
    IdentifierFilterRefused,
    SeriesQuery,
    all_series,
    csv_text,
    list_series,
    list_studies,
    summary,
)
from karnak_monitor.recorder import SeriesRecorder
from karnak_monitor.retention import purge
from karnak_shared.database import open_database
from karnak_shared.envelope import EventKind, TransferEvent, TransferOrigin
from tests.support.databases import database_url

pytestmark = pytest.mark.integration

Sessions = Callable[[], Session]
STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = [f"{STUDY}.{n}" for n in (1, 2, 3)]


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sessions]:
    with database_url(request.param, tmp_path) as url:
        factory = open_database(url)
        yield factory
        factory.kw["bind"].dispose()


def event(
    kind: EventKind,
    destination: str,
    series: int,
    instance: int,
    at: float,
    reason: str | None = None,
    deidentified: bool = False,
) -> TransferEvent:
    sent_series = f"2.25.{series}{destination}" if deidentified else SERIES[series]
    return TransferEvent(
        kind=kind,
        destination=destination,
        forward_node="KARNAK-GW",
        instance_id=str(uuid.uuid4()),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"{SERIES[series]}.{instance}",
        study_instance_uid="2.25.99" if deidentified else STUDY,
        series_instance_uid=sent_series,
        reason=reason,
        received_at=at - 1,
        at=at,
        origin=TransferOrigin(
            study_instance_uid=STUDY,
            series_instance_uid=SERIES[series],
            modality="CT",
            study_description="CHEST",
            series_description=f"series {series}",
            study_date="20261203",
            patient_id="PAT-001",
            accession_number="ACC-7",
            patient_id_sent="A1B2C3" if deidentified else "PAT-001",
            accession_number_sent="" if deidentified else "ACC-7",
            deidentified=deidentified,
        ),
    )


def three_destinations(now: float) -> list[TransferEvent]:
    """One study of 3 series x 2 instances: `research` delivers, `excluded` rejects, `flaky` retries then sends."""
    events = []
    for series in range(3):
        for instance in range(2):
            t = now + series * 10 + instance
            events.append(event("sent", "research", series, instance, t, deidentified=True))
            events.append(event("rejected", "excluded", series, instance, t, reason="condition is false"))
            events.append(event("retried", "flaky", series, instance, t, reason="association refused"))
            events.append(event("retried", "flaky", series, instance, t + 1, reason="association refused"))
            events.append(event("sent", "flaky", series, instance, t + 2))
    return events


def by_destination(sessions: Sessions, **filters: object) -> dict[tuple[str, str], dict[str, object]]:
    page = list_series(sessions, SeriesQuery(page_size=100, **filters), may_see_originals=True)
    return {(r.destination, r.series_uid): r.model_dump() for r in page.items}


def test_each_series_row_counts_sent_excluded_and_retries_exactly(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    for item in three_destinations(1_800_000_000.0):
        assert recorder.record(item)

    rows = by_destination(sessions)

    assert len(rows) == 9
    for uid in SERIES:
        research, excluded, flaky = rows["research", uid], rows["excluded", uid], rows["flaky", uid]
        assert (research["status"], research["instances"], research["sent"], research["errors"]) == ("sent", 2, 2, 0)
        assert research["series_uid_sent"].startswith("2.25.") and research["deidentified"] is True
        assert (excluded["status"], excluded["excluded"], excluded["sent"]) == ("excluded", 2, 0)
        assert excluded["reasons"] == [{"outcome": "rejected", "reason": "condition is false", "count": 2}]
        assert (flaky["status"], flaky["sent"], flaky["retries"], flaky["retrying"], flaky["errors"]) == (
            "sent",
            2,
            4,
            0,
            0,
        )
        assert flaky["reasons"] == [{"outcome": "retried", "reason": "association refused", "count": 4}]


def test_a_redelivered_event_changes_no_count(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    events = three_destinations(1_800_000_000.0)
    for item in events:
        recorder.record(item)
    before = by_destination(sessions)

    assert not any(recorder.record(item) for item in events)  # every event a second time, as after a kill -9

    assert by_destination(sessions) == before


def test_a_late_retry_event_does_not_undo_a_delivery(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    recorder.record(event("sent", "flaky", 0, 0, 100.0))
    recorder.record(event("retried", "flaky", 0, 0, 90.0, reason="timeout"))

    row = by_destination(sessions)["flaky", SERIES[0]]

    assert (row["status"], row["sent"], row["retrying"], row["retries"]) == ("sent", 1, 0, 1)


def test_a_series_still_retrying_shows_retrying_and_a_failure_outranks_it(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    recorder.record(event("retried", "flaky", 0, 0, 100.0, reason="association refused"))
    assert by_destination(sessions)["flaky", SERIES[0]]["status"] == "retrying"

    recorder.record(event("failed", "flaky", 0, 1, 101.0, reason="SOP class refused (0x0122)"))

    row = by_destination(sessions)["flaky", SERIES[0]]
    assert (row["status"], row["errors"], row["retrying"], row["instances"]) == ("error", 1, 1, 2)


def test_a_stow_409_is_a_duplicate_not_both_sent_and_failed(sessions: Sessions) -> None:
    SeriesRecorder(sessions).record(event("duplicate", "kheops", 0, 0, 100.0, reason="already stored (409)"))

    row = by_destination(sessions)["kheops", SERIES[0]]

    assert (row["status"], row["duplicates"], row["sent"], row["errors"]) == ("sent", 1, 0, 0)


def test_filters_by_status_destination_and_uids_original_or_as_sent(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    for item in three_destinations(1_800_000_000.0):
        recorder.record(item)

    def count(**filters: object) -> int:
        return list_series(sessions, SeriesQuery(**filters), may_see_originals=True).total

    assert count(status="excluded") == 3
    assert count(status="sent") == 6
    assert count(status="not-sent") == 3
    assert count(status="error") == 0
    assert count(destination="research") == 3
    assert count(series_uid=SERIES[1]) == 3  # original UID: every destination
    assert count(series_uid="2.25.1research") == 1  # as sent by the de-identifying destination
    assert count(study_uid="2.25.99") == 3
    assert count(patient_id="PAT-001") == 9
    assert count(since=dt.datetime.fromtimestamp(1_800_000_020, dt.UTC)) == 3


def test_pages_are_stable_and_sorted(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    for item in three_destinations(1_800_000_000.0):
        recorder.record(item)

    pages = [
        list_series(sessions, SeriesQuery(page=n, page_size=4, sort="destination"), may_see_originals=True)
        for n in (1, 2, 3)
    ]

    keys = [(r.destination, r.series_uid) for page in pages for r in page.items]
    assert len(keys) == len(set(keys)) == 9
    assert [k[0] for k in keys] == sorted(k[0] for k in keys)
    assert pages[0].total == 9


def test_a_viewer_sees_values_as_sent_and_cannot_search_original_identifiers(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    recorder.record(event("sent", "research", 0, 0, 100.0, deidentified=True))

    row = list_series(sessions, SeriesQuery(), may_see_originals=False).items[0]

    assert (row.patient_id, row.accession_number) == ("A1B2C3", "")
    with pytest.raises(IdentifierFilterRefused):
        list_series(sessions, SeriesQuery(patient_id="PAT-001"), may_see_originals=False)
    assert list_series(sessions, SeriesQuery(), may_see_originals=True).items[0].patient_id == "PAT-001"


def test_without_original_identifiers_the_tables_never_hold_them(sessions: Sessions) -> None:
    SeriesRecorder(sessions, original_identifiers=False).record(
        event("sent", "research", 0, 0, 100.0, deidentified=True)
    )

    row = list_series(sessions, SeriesQuery(), may_see_originals=True).items[0]

    assert row.patient_id == "" and row.accession_number == ""
    with sessions() as session:
        dumped = " ".join(str(v) for v in session.execute(text("SELECT * FROM transfer_series")))
    assert "ACC-7" not in dumped and "PAT-001" not in dumped


def test_studies_and_the_dashboard_sum_their_series(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    for item in three_destinations(1_800_000_000.0):
        recorder.record(item)

    studies = {s.destination: s for s in list_studies(sessions, SeriesQuery(), may_see_originals=True)}
    dashboard = summary(sessions, SeriesQuery(), may_see_originals=True)

    assert (studies["flaky"].series, studies["flaky"].instances, studies["flaky"].retries) == (3, 6, 12)
    assert studies["excluded"].status == "excluded"
    assert len(dashboard) == 1
    node = dashboard[0]
    assert (node.studies, node.series, node.instances, node.sent, node.excluded, node.retries) == (1, 9, 18, 12, 6, 12)
    assert (node.deidentified, node.tag_morphed) == (6, 0)  # from each transfer's own flag


def test_the_csv_export_of_a_filter_has_exactly_the_api_rows(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    for item in three_destinations(1_800_000_000.0):
        recorder.record(item)
    query = SeriesQuery(status="sent")

    rows = all_series(sessions, query, may_see_originals=True)
    text = csv_text(rows, separator=";")

    lines = text.strip().split("\n")
    assert len(lines) == 1 + list_series(sessions, query, may_see_originals=True).total
    assert lines[0].startswith("forward_node;destination;status;")
    assert all(";sent;" in line for line in lines[1:])
    assert "+00:00" in lines[1]  # ISO 8601 with its offset


def test_purge_deletes_series_last_seen_before_the_retention(sessions: Sessions) -> None:
    recorder = SeriesRecorder(sessions)
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    recorder.record(event("sent", "research", 0, 0, (now - dt.timedelta(days=40)).timestamp()))
    recorder.record(event("sent", "research", 1, 0, (now - dt.timedelta(days=2)).timestamp()))

    done = purge(sessions, dt.timedelta(days=30), now=now)

    assert done.series == 1
    remaining = list_series(sessions, SeriesQuery(), may_see_originals=True).items
    assert [r.series_uid for r in remaining] == [SERIES[1]]
