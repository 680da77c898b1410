"""The monitoring API: filters, pages, sorting, roles (original identifiers for operator and admin only), CSV.

The rows are written by the monitor's own recorder into the console's database, as the monitor service
does; the API is then asked as each role would.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_monitor.recorder import SeriesRecorder
from karnak_shared import header_names
from karnak_shared.envelope import EventKind, TransferEvent, TransferOrigin
from karnak_shared.topology import Topology
from tests.console.conftest import ConsoleUnderTest, start_console, write_config

STUDY = "1.2.826.0.1.3680043.8.498.5"
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC).timestamp()


def event(
    kind: EventKind,
    destination: str,
    series: int,
    instance: int,
    at: float,
    reason: str | None = None,
    deidentified: bool = False,
    study: str = STUDY,
    patient: str = "PAT-001",
) -> TransferEvent:
    original = f"{study}.{series}"
    return TransferEvent(
        kind=kind,
        destination=destination,
        forward_node="KARNAK-GW",
        instance_id=str(uuid.uuid4()),
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"{original}.{instance}",
        study_instance_uid="2.25.777" if deidentified else study,
        series_instance_uid=f"2.25.{series}00" if deidentified else original,
        reason=reason,
        received_at=at - 1,
        at=at,
        origin=TransferOrigin(
            study_instance_uid=study,
            series_instance_uid=original,
            modality="CT",
            study_description="CHEST",
            series_description=f"series {series}",
            study_date="20261201",
            patient_id=patient,
            accession_number="ACC-9",
            patient_id_sent="5E2D1C" if deidentified else patient,
            accession_number_sent="" if deidentified else "ACC-9",
            deidentified=deidentified,
        ),
    )


@pytest.fixture
def filled(app: ConsoleUnderTest) -> ConsoleUnderTest:
    """One study of three series: `research` (de-identified) has them all, `archive` refuses series 2,
    `excluded` rejects series 3; a second study reaches `archive` an hour later."""
    recorder = SeriesRecorder(app.console.accounts.sessions)
    items = []
    for series in (1, 2, 3):
        for n in range(2):
            t = T0 + series * 60 + n
            items.append(event("sent", "research", series, n, t, deidentified=True))
            if series == 2:
                items.append(event("retried", "archive", series, n, t, reason="association refused"))
                items.append(event("failed", "archive", series, n, t + 1, reason="0xA900 (Data set does not match)"))
            else:
                items.append(event("sent", "archive", series, n, t))
            if series == 3:
                items.append(event("rejected", "excluded", series, n, t, reason="condition is false"))
    items.append(event("sent", "archive", 1, 0, T0 + 3600, study="1.2.826.0.1.3680043.8.498.6", patient="PAT-002"))
    for item in items:
        assert recorder.record(item)
    return app


def rows(app: ConsoleUnderTest, query: str = "", role: str = "admin") -> list[dict[str, Any]]:
    answer = app.get(f"/api/v1/monitoring/series?page_size=100&{query}", role=role)
    assert answer.status_code == 200, answer.json()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def keys(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["destination"], r["series_uid"].rsplit(".", 1)[1]) for r in found)


def test_every_role_reads_the_series_rows_with_their_counts_and_reasons(filled: ConsoleUnderTest) -> None:
    found = {(r["destination"], r["series_uid"]): r for r in rows(filled, role="viewer")}
    assert len(found) == 8
    failing = found["archive", f"{STUDY}.2"]
    assert (failing["status"], failing["instances"], failing["errors"], failing["retries"]) == ("error", 2, 2, 2)
    assert failing["reasons"] == [
        {"outcome": "failed", "reason": "0xA900 (Data set does not match)", "count": 2},
        {"outcome": "retried", "reason": "association refused", "count": 2},
    ]
    excluded = found["excluded", f"{STUDY}.3"]
    assert (excluded["status"], excluded["excluded"], excluded["reasons"][0]["reason"]) == (
        "excluded",
        2,
        "condition is false",
    )
    assert found["research", f"{STUDY}.1"]["series_uid_sent"] == "2.25.100"


def test_times_are_iso_8601_with_their_offset(filled: ConsoleUnderTest) -> None:
    first = rows(filled, "sort=first_seen")[0]
    assert first["first_seen"] == "2026-12-01T08:01:00Z" or first["first_seen"].endswith("+00:00")
    assert dt.datetime.fromisoformat(first["first_seen"]) == dt.datetime(2026, 12, 1, 8, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=error", [("archive", "2")]),
        ("status=excluded", [("excluded", "3")]),
        ("status=sent&destination=archive", [("archive", "1"), ("archive", "1"), ("archive", "3")]),
        ("status=not-sent", [("archive", "2"), ("excluded", "3")]),
        ("destination=excluded", [("excluded", "3")]),
        # The series UID as sent to the de-identifying destination finds its row; the original finds all three.
        ("series_uid=2.25.200", [("research", "2")]),
        (f"series_uid={STUDY}.2", [("archive", "2"), ("research", "2")]),
        ("study_uid=2.25.777", [("research", "1"), ("research", "2"), ("research", "3")]),
        ("since=2026-12-01T09:01:30%2B01:00&until=2026-12-01T08:02:30Z", [("archive", "2"), ("research", "2")]),
        ("since=2026-12-01T08:30:00Z", [("archive", "1")]),
    ],
)
def test_filters_select_the_rows_they_name(
    filled: ConsoleUnderTest, query: str, expected: list[tuple[str, str]]
) -> None:
    assert keys(rows(filled, query)) == sorted(expected)


def test_an_empty_time_range_is_a_clear_error(filled: ConsoleUnderTest) -> None:
    answer = filled.get("/api/v1/monitoring/series?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z")
    assert answer.status_code == 422
    assert "since must not be after until" in json.dumps(answer.json())


def test_pages_are_sorted_and_stable(filled: ConsoleUnderTest) -> None:
    seen: list[str] = []
    for page in (1, 2, 3, 4):
        answer = filled.get(f"/api/v1/monitoring/series?page={page}&page_size=3&sort=-errors").json()
        assert answer["total"] == 8
        seen += [f"{r['destination']}/{r['series_uid']}" for r in answer["items"]]
    assert len(seen) == len(set(seen)) == 8
    first = filled.get("/api/v1/monitoring/series?page_size=1&sort=-errors").json()["items"][0]
    assert first["status"] == "error"


def test_only_operator_and_admin_see_and_search_the_original_patient_identifiers(filled: ConsoleUnderTest) -> None:
    research = f"destination=research&series_uid={STUDY}.1"
    (viewed,) = rows(filled, research, role="viewer")
    assert (viewed["patient_id"], viewed["accession_number"]) == ("5E2D1C", "")
    for role in ("operator", "admin"):
        (row,) = rows(filled, research, role=role)
        assert (row["patient_id"], row["accession_number"]) == ("PAT-001", "ACC-9")
        assert keys(rows(filled, "patient_id=PAT-002", role=role)) == [("archive", "1")]
    refused = filled.get("/api/v1/monitoring/series?patient_id=PAT-001", role="viewer")
    assert refused.status_code == 403
    assert filled.get("/api/v1/monitoring/export.csv?accession_number=ACC-9", role="viewer").status_code == 403
    # A viewer sees what the de-identifying destination was sent, never the original values.
    everything = filled.get("/api/v1/monitoring/export.csv?destination=research", role="viewer").text
    everything += json.dumps(filled.get("/api/v1/monitoring/studies?destination=research", role="viewer").json())
    assert "5E2D1C" in everything
    assert "PAT-001" not in everything and "ACC-9" not in everything


def test_the_csv_export_of_a_filter_has_exactly_the_apis_rows_with_the_chosen_separator(
    filled: ConsoleUnderTest,
) -> None:
    for role in ("viewer", "operator"):
        query = "status=sent&sort=destination"
        listed = rows(filled, query, role=role)
        answer = filled.get(f"/api/v1/monitoring/export.csv?{query}&separator=;&page_size=1", role=role)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(answer.text), delimiter=";"))
        assert len(table) == len(listed) == 6
        for line, row in zip(table, listed, strict=True):
            assert (line["destination"], line["series_uid"], line["patient_id"]) == (
                row["destination"],
                row["series_uid"],
                row["patient_id"],
            )
            assert (int(line["instances"]), int(line["sent"]), line["last_seen"]) == (
                row["instances"],
                row["sent"],
                dt.datetime.fromisoformat(row["last_seen"]).isoformat(),
            )


def test_a_separator_of_more_than_one_character_or_a_quote_is_refused(filled: ConsoleUnderTest) -> None:
    assert filled.get("/api/v1/monitoring/export.csv?separator=;;").status_code == 422
    assert filled.get('/api/v1/monitoring/export.csv?separator="').status_code == 422


def test_studies_and_the_dashboard_sum_their_series(filled: ConsoleUnderTest) -> None:
    studies = filled.get("/api/v1/monitoring/studies?destination=archive", role="viewer").json()
    assert [(s["study_uid"], s["series"], s["instances"], s["errors"], s["status"]) for s in studies] == [
        ("1.2.826.0.1.3680043.8.498.6", 1, 1, 0, "sent"),
        (STUDY, 3, 6, 2, "error"),
    ]
    (node,) = filled.get("/api/v1/monitoring/summary", role="viewer").json()
    assert node == {
        "forward_node": "KARNAK-GW",
        "studies": 2,
        "series": 8,
        "instances": 15,
        "sent": 11,
        "errors": 2,
        "excluded": 2,
        "retries": 2,
        # From each transfer's own flag: the six instances sent de-identified to research.
        "deidentified": 6,
        "tag_morphed": 0,
    }


def test_signing_in_is_needed(filled: ConsoleUnderTest) -> None:
    assert filled.client.get("/api/v1/monitoring/series").status_code == 401


def test_a_failing_series_lists_its_parked_messages_for_operators(tmp_path: Path, amqp_url: str) -> None:
    prefix = f"karnak-test-{uuid.uuid4().hex[:10]}"
    app = start_console(write_config(tmp_path / "karnak.yml", broker={"url": amqp_url, "prefix": prefix}))
    topology = Topology.from_config(app.console.gateway_config())
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    try:
        topology.declare(channel)
        recorder = SeriesRecorder(app.console.accounts.sessions)
        failed = event("failed", "archive", 2, 0, T0, reason="0xA900 (Data set does not match)")
        recorder.record(failed)
        recorder.record(event("sent", "archive", 1, 0, T0))
        for uid in (failed.sop_instance_uid, f"{STUDY}.1.0", "1.2.3.other"):
            headers = {
                "karnak-instance-id": f"id-{uid}",
                "karnak-destination": "archive",
                "karnak-sop-instance-uid": uid,
                header_names.REASON: "0xA900 (Data set does not match)",
                header_names.CAUSE: "refused",
            }
            channel.basic_publish(
                topology.dead_exchange, "", b"", pika.BasicProperties(headers=headers, delivery_mode=2)
            )
        url = f"/api/v1/monitoring/series/parked?forward_node=KARNAK-GW&destination=archive&series_uid={STUDY}.2"
        answer = app.get(url, role="operator")
        assert answer.status_code == 200, answer.json()
        assert [p["instance_id"] for p in answer.json()] == [f"id-{failed.sop_instance_uid}"]
        assert app.get(url, role="viewer").status_code == 403
        assert app.get(url.replace(f"{STUDY}.2", "9.9.9"), role="operator").status_code == 404
    finally:
        topology.delete(channel)
        connection.close()
        app.client.close()
        app.console.store.close()
