"""Monitoring API latency with 10,000 series rows in PostgreSQL (issue 15: the filtered API under 200 ms).

Creates a PostgreSQL database of its own (`karnak_bench_<random>`, dropped at the end) on the local
server (or `--server URL`), brings its schema up with the migrations, fills it with series rows as the
monitor writes them (two forward nodes, five destinations, studies of five series; a mix of sent,
excluded, failing and retrying series with their reasons), then asks the console's API in-process
(FastAPI's test client, a viewer's and an operator's token) each filter the Monitoring page uses,
`--repeat` times, and prints the median and the slowest answer of each.

    .venv/bin/python bench/monitoring_queries.py [--series 10000] [--repeat 20] [--server postgresql://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from karnak_console.app import create_app
from karnak_console.context import Console
from karnak_console.main import open_store
from sqlalchemy import create_engine, insert, text

from karnak_shared.config import load_config
from karnak_shared.database import TransferReasonRecord, TransferSeriesRecord, open_database

DESTINATIONS = ("research-pacs", "archive", "kheops-main", "cohort-stow", "teaching")
NODES = ("KARNAK-GW", "KARNAK-CARDIO")
REASONS = {
    "failed": "pacs.example:104 answered 0xA900 (Data set does not match SOP Class)",
    "rejected": "Condition of destination cohort-stow is not met: tagValueContains(#Tag.StudyDescription, 'X')",
    "retried": "connection to pacs.example:104 refused",
}


def fill(url: str, series: int, now: dt.datetime) -> tuple[str, str]:
    """Write `series` rows; returns a (study UID as sent, original patient ID) that exists, to search for."""
    sessions = open_database(url)
    rng = random.Random(15)
    rows, reasons = [], []
    for n in range(series):
        study, node = n // 5, NODES[(n // 5) % len(NODES)]
        destination = DESTINATIONS[n % len(DESTINATIONS)]
        kind = rng.choices(["sent", "rejected", "failed", "retried"], [85, 8, 5, 2])[0]
        instances = rng.randint(1, 300)
        last = now - dt.timedelta(minutes=rng.randint(0, 30 * 24 * 60))
        rows.append(
            {
                "id": n + 1,
                "forward_node": node,
                "destination": destination,
                "study_uid": f"1.2.826.0.1.3680043.8.498.{study}",
                "series_uid": f"1.2.826.0.1.3680043.8.498.{study}.{n % 5}",
                "study_uid_sent": f"2.25.{study}{n % 3}",
                "series_uid_sent": f"2.25.{n}{n % 3}",
                "patient_id": f"PAT-{study % 1500:05d}",
                "accession_number": f"ACC-{study}",
                "patient_id_sent": f"{study % 1500:06X}",
                "accession_number_sent": "",
                "modality": rng.choice(["CT", "MR", "US", "CR"]),
                "study_description": "RESEARCH BRAIN",
                "series_description": f"series {n % 5}",
                "study_date": "20261201",
                "sop_classes": "1.2.840.10008.5.1.4.1.1.2",
                "instances": instances,
                "sent": instances if kind == "sent" else 0,
                "errors": instances if kind == "failed" else 0,
                "excluded": instances if kind == "rejected" else 0,
                "retries": instances if kind in ("retried", "failed") else 0,
                "duplicates": 0,
                "retrying": instances if kind == "retried" else 0,
                "deidentified": destination == "research-pacs",
                "tag_morphed": destination == "teaching",
                "first_seen": last - dt.timedelta(seconds=instances),
                "last_seen": last,
            }
        )
        if kind != "sent":
            reasons.append({"series_id": n + 1, "outcome": kind, "reason": REASONS[kind], "count": instances})
    with sessions() as session, session.begin():
        for start in range(0, len(rows), 2000):
            session.execute(insert(TransferSeriesRecord), rows[start : start + 2000])
        if reasons:
            session.execute(insert(TransferReasonRecord), reasons)
        session.execute(text("ANALYZE transfer_series"))
    sessions.kw["bind"].dispose()
    return str(rows[7]["study_uid_sent"]), str(rows[7]["patient_id"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@localhost:5432")
    parser.add_argument("--target-ms", type=float, default=200.0)
    args = parser.parse_args()

    name = f"karnak_bench_{uuid.uuid4().hex[:10]}"
    server = create_engine(f"{args.server}/postgres", isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{args.server}/{name}".replace("postgresql+psycopg://", "postgresql://")
    slowest = 0.0
    try:
        now = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        study_sent, patient = fill(url, args.series, now)
        print(f"filled {args.series} series rows into PostgreSQL in {time.perf_counter() - started:.1f} s")
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "karnak.yml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "database": {"url": url},
                        "forward_nodes": [{"ae_title": node} for node in NODES],
                        "console": {"admin_password_file": str(Path(folder) / "admin-password")},
                    }
                )
            )
            store = open_store(load_config(config))
            console = Console.build(store, status=False, announce=False)
            client = TestClient(create_app(console))
            tokens = {
                role: console.accounts.create_token(f"bench-{role}", role, "bench")[1]
                for role in ("viewer", "operator")
            }
            day = (now - dt.timedelta(hours=24)).isoformat()
            week = (now - dt.timedelta(days=7)).isoformat()
            series, studies, dashboard = (f"/api/v1/monitoring/{name}" for name in ("series", "studies", "summary"))
            cases = [
                ("viewer", "series, last 24 hours (the page's default)", series, {"since": day}),
                ("viewer", "series, last 7 days, status error", series, {"since": week, "status": "error"}),
                ("viewer", "series, status retrying, one destination", series,
                 {"status": "retrying", "destination": "archive"}),
                ("viewer", "series, all, sorted by errors, page 20", series, {"sort": "-errors", "page": 20}),
                ("viewer", "series, a study UID as sent", series, {"study_uid": study_sent}),
                ("operator", "series, an original patient ID", series, {"patient_id": patient}),
                ("viewer", "studies, last 7 days, one forward node", studies,
                 {"since": week, "forward_node": NODES[0]}),
                ("viewer", "summary (dashboard), last 7 days", dashboard, {"since": week}),
                ("viewer", "export.csv, last 24 hours, status sent", "/api/v1/monitoring/export.csv",
                 {"since": day, "status": "sent"}),
            ]  # fmt: skip
            print(f"{'request':<48} {'rows':>6} {'median ms':>10} {'max ms':>8}")
            for role, label, path, params in cases:
                headers = {"Authorization": f"Bearer {tokens[role]}"}
                times = []
                answer = client.get(path, params=params, headers=headers)
                assert answer.status_code == 200, answer.text
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    answer = client.get(path, params=params, headers=headers)
                    times.append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200, answer.text
                body = answer.json() if path.endswith(("series",)) else None
                count = (
                    body["total"]
                    if body
                    else (len(answer.text.splitlines()) - 1 if path.endswith(".csv") else len(answer.json()))
                )
                slowest = max(slowest, statistics.median(times))
                print(f"{label:<48} {count:>6} {statistics.median(times):>10.1f} {max(times):>8.1f}")
            client.close()
            store.close()
            console.accounts.engine.dispose()
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()
    verdict = "within" if slowest < args.target_ms else "OVER"
    print(f"slowest median {slowest:.1f} ms: {verdict} the {args.target_ms:g} ms target")
    return 0 if slowest < args.target_ms else 1


if __name__ == "__main__":
    sys.exit(main())
