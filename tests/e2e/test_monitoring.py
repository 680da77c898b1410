"""Transfer monitoring end to end: storescu -> `karnak up` (monitor and console included) -> three PACS.

One study of three series goes to a forward node with three destinations: `research` delivers,
`filtered` rejects every instance by its condition, `late` is down at first (nothing listens on its
port) and comes up once every instance was retried: a storescp started later. The console's monitoring
API (RabbitMQ, PostgreSQL, DCMTK all real) then shows sent / excluded with the condition's reason /
retries then sent, with exact counts, although the monitor was killed (SIGKILL) mid-stream; and every
event of the run published a second time changes no count.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pika
import psycopg
import pytest
from pydicom import dcmread

from karnak_dicom.testing import ACCESSION_NUMBER, PATIENT_ID, StudyFiles, make_study
from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.faults import kill_service
from tests.support.servers import Gateway, StoreSCP, free_port, metric_value, storescu, wait_for_port, wait_until

pytestmark = pytest.mark.e2e

POSTGRES = "postgresql://postgres@localhost:5432"
CONDITION = "tagValueContains(#Tag.StudyDescription, 'CARDIAC')"
# The first delay is long enough for the test to see every instance retried and to start the late PACS.
RETRY_DELAYS = [6, 10, 30]
SERVICES = ("receiver", "processor", "dicom-sender", "monitor", "console")


@dataclass
class Run:
    gateway: Gateway
    study: StudyFiles
    operator: httpx.Client
    viewer: httpx.Client
    topology: Topology
    series_sizes: dict[str, int]
    killed: tuple[int, int]
    captured: list[tuple[str, bytes, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"karnak_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"{POSTGRES}/{name}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _client(gateway: Gateway, role: str) -> httpx.Client:
    created = gateway.karnak("tokens", "create", f"monitoring-{role}", "--role", role)
    assert created.returncode == 0, created.stderr
    port = int(gateway.config["console"]["port"])
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}/api/v1/monitoring",
        headers={"Authorization": f"Bearer {created.stdout.strip()}"},
        timeout=30,
    )


def series_rows(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = client.get("/series", params={"page_size": 100, "sort": "destination", **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def by_destination(client: httpx.Client, destination: str) -> list[dict[str, Any]]:
    return series_rows(client, destination=destination)


def totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("instances", "sent", "errors", "excluded", "retries", "retrying")
    return {k: sum(int(r[k]) for r in rows) for k in keys}


def _capture(amqp_url: str, topology: Topology) -> tuple[Any, str]:
    """A queue of the test's own on the events exchange: a copy of every event of the run."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, topology.events_exchange, routing_key="transfer.#")
    return connection, queue


@pytest.fixture(scope="module")
def run(amqp_url: str, database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("monitoring")
    prefix = f"karnak-test-e2e-monitoring-{free_port()}"
    research = StoreSCP("PACS_R", free_port(), workdir / "research").start()
    late_port = free_port()
    late = StoreSCP("PACS_L", late_port, workdir / "late")
    destinations: list[dict[str, Any]] = [
        {"id": "research", "type": "dicom", "ae_title": "PACS_R", "hostname": "127.0.0.1", "port": research.port},
        {
            "id": "filtered",
            "type": "dicom",
            "ae_title": "PACS_F",
            "hostname": "127.0.0.1",
            "port": free_port(),
            "condition": CONDITION,
        },
        {"id": "late", "type": "dicom", "ae_title": "PACS_L", "hostname": "127.0.0.1", "port": late_port},
    ]
    config = gateway_config(amqp_url, prefix, workdir, destinations)
    config["database"] = {"url": database}
    config["broker"]["retry_delays"] = RETRY_DELAYS
    # With a port of its own, `karnak up` and the test wait until the monitor (and its queue) is ready.
    config["metrics"]["ports"]["monitor"] = free_port()
    parsed = parse_config(json.dumps(config))
    register_topology(amqp_url, parsed)
    topology = Topology(prefix, tuple(RETRY_DELAYS), parsed.broker.delivery_limit, (), monitor=True)
    gateway = Gateway(config, workdir)
    study = make_study(workdir / "study", ct=3, mr=2, multiframe=1, large=0, compressed=0)
    capture: Any = None
    try:
        gateway.start("--only", *SERVICES, timeout=120)
        wait_for_port(gateway.listener_port)
        operator, viewer = _client(gateway, "operator"), _client(gateway, "viewer")
        capture, captured_queue = _capture(amqp_url, topology)
        sent = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        instances = len(study.paths)
        # Every instance tried once at `late` and waiting in the delay queues: bring the PACS up.
        wait_until(
            lambda: totals(by_destination(operator, "late"))["retrying"] == instances,
            RETRY_DELAYS[0] - 1,
            f"every instance retried for late (log: {gateway.log_path})",
        )
        late.start()
        wait_for_port(late_port)
        # Mid-stream: the late deliveries (and their events) are still to come.
        assert totals(by_destination(operator, "late"))["sent"] == 0
        killed = kill_service(gateway, "monitor")
        wait_until(lambda: totals(by_destination(operator, "late"))["sent"] == instances, 60, "late delivered")
        wait_until(lambda: len(late.files()) >= instances, 30, "the late PACS has every instance")
        sizes: dict[str, int] = {}
        for path in study.paths:
            uid = str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
            sizes[uid] = sizes.get(uid, 0) + 1
        time.sleep(2)  # anything more that would arrive (a duplicate event) has time to
        captured = []
        channel = capture.channel()
        while True:
            method, properties, body = channel.basic_get(captured_queue, auto_ack=True)
            if method is None:
                break
            captured.append((method.routing_key, body, dict(properties.headers or {})))
        yield Run(gateway, study, operator, viewer, topology, sizes, killed, captured)
    finally:
        gateway.stop()
        research.stop()
        late.stop()
        if capture is not None and capture.is_open:
            capture.close()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(topology.monitor_queue)
        connection.close()


def test_the_delivering_destination_shows_every_series_sent(run: Run) -> None:
    rows = by_destination(run.operator, "research")
    assert {r["series_uid"]: (r["status"], r["instances"], r["sent"]) for r in rows} == {
        uid: ("sent", n, n) for uid, n in run.series_sizes.items()
    }
    assert totals(rows) == {"instances": 6, "sent": 6, "errors": 0, "excluded": 0, "retries": 0, "retrying": 0}
    assert all(r["reasons"] == [] for r in rows)


def test_the_rejecting_destination_shows_every_series_excluded_with_the_conditions_reason(run: Run) -> None:
    rows = by_destination(run.operator, "filtered")
    assert {r["series_uid"]: (r["status"], r["instances"], r["excluded"], r["sent"]) for r in rows} == {
        uid: ("excluded", n, n, 0) for uid, n in run.series_sizes.items()
    }
    for row in rows:
        assert row["reasons"] == [
            {
                "outcome": "rejected",
                "reason": f"Condition of destination filtered is not met: {CONDITION}",
                "count": run.series_sizes[row["series_uid"]],
            }
        ]


def test_the_destination_that_came_up_late_shows_one_retry_per_instance_then_sent(run: Run) -> None:
    rows = by_destination(run.operator, "late")
    assert {r["series_uid"]: (r["status"], r["instances"], r["sent"], r["retries"], r["retrying"]) for r in rows} == {
        uid: ("sent", n, n, n, 0) for uid, n in run.series_sizes.items()
    }
    port = str(run.gateway.config["forward_nodes"][0]["destinations"][2]["port"])
    for row in rows:
        # The first instance found the port closed; the next ones were held back (no new attempt for 1 s).
        assert {r["outcome"] for r in row["reasons"]} == {"retried"}
        assert sum(r["count"] for r in row["reasons"]) == run.series_sizes[row["series_uid"]]
        assert all(port in r["reason"] for r in row["reasons"])


def test_the_monitor_was_killed_mid_stream_and_restarted(run: Run) -> None:
    old, new = run.killed
    assert old != new
    assert totals(series_rows(run.operator)) == {
        "instances": 18,
        "sent": 12,
        "errors": 0,
        "excluded": 6,
        "retries": 6,
        "retrying": 0,
    }


def test_every_event_published_again_changes_no_count(run: Run, amqp_url: str) -> None:
    before = series_rows(run.operator)
    # 6 sent + 6 rejected + 6 retried + 6 sent: each event once on the broker, whatever the monitor saw twice.
    assert sorted({key.rsplit(".", 1)[0] for key, _, _ in run.captured}) == [
        "transfer.rejected",
        "transfer.retried",
        "transfer.sent",
    ]
    assert len(run.captured) == 24
    counted = metric_value(
        run.gateway.metrics("monitor"), "karnak_monitor_events_total", kind="sent", outcome="redelivered"
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        for routing_key, body, headers in run.captured:
            # The senders' signed bodies and headers, as RabbitMQ would redeliver them.
            channel.basic_publish(
                run.topology.events_exchange, routing_key, body, pika.BasicProperties(headers=headers, delivery_mode=2)
            )
    finally:
        connection.close()

    def all_seen() -> bool:
        metrics = run.gateway.metrics("monitor")
        return metric_value(metrics, "karnak_monitor_events_total", kind="sent", outcome="redelivered") >= counted + 12

    wait_until(all_seen, 30, "the monitor saw every sent event again")
    assert series_rows(run.operator) == before


def test_the_csv_export_of_a_filter_equals_the_apis_rows(run: Run) -> None:
    listed = series_rows(run.viewer, status="sent")
    answer = run.viewer.get("/export.csv", params={"status": "sent", "sort": "destination", "separator": "\t"})
    assert answer.status_code == 200, answer.text
    table = list(csv.DictReader(io.StringIO(answer.text), delimiter="\t"))
    assert [(t["destination"], t["series_uid"], int(t["sent"])) for t in table] == [
        (r["destination"], r["series_uid"], r["sent"]) for r in listed
    ]
    assert len(table) == 6


def test_original_identifiers_only_for_operators_and_summary_from_each_transfers_flags(run: Run) -> None:
    (operator_row, *_) = series_rows(run.operator, destination="research")
    assert (operator_row["patient_id"], operator_row["accession_number"]) == (PATIENT_ID, ACCESSION_NUMBER)
    assert run.viewer.get("/series", params={"patient_id": PATIENT_ID}).status_code == 403
    assert run.operator.get("/series", params={"patient_id": PATIENT_ID}).json()["total"] == 9
    (node,) = run.viewer.get("/summary").json()
    assert (node["forward_node"], node["studies"], node["series"], node["instances"]) == ("KARNAK-GW", 1, 9, 18)
    assert (node["sent"], node["excluded"], node["retries"], node["errors"], node["deidentified"]) == (12, 6, 6, 0, 0)
