"""How long the console's Gateway pages take to render with 50 forward nodes and 500 destinations.

The console runs in-process (its FastAPI app through Starlette's test client, a SQLite database in a
temporary folder, no broker needed for the pages themselves), signed in through the login form like a
browser. Two layouts of the same size: 10 destinations on each of the 50 nodes, and all 500 on one node
(the longest destinations list). Each page is asked for `--rounds` times; the median, the 95th percentile
and the largest wall-clock time are printed with the median CPU time of a request; the verdict is the
median against the target (300 ms), since on a shared machine the tail is other processes' load (the
load average is printed).

    .venv/bin/python bench/console_pages.py [--rounds 20]

The destinations list's Activity and Queue depth cells come from RabbitMQ in a request htmx makes after
the page (`/gateway/NODE/destinations-activity`, one passive queue declare per destination); it is timed
too, outside the pages' verdict, when a broker answers at $KARNAK_BENCH_AMQP_URL (default
amqp://guest:guest@localhost:5672/), and said to be skipped otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from karnak_console.app import create_app
from karnak_console.context import Console
from karnak_console.main import open_store

from karnak_shared.config import load_config

TARGET_MS = 300.0
NODES, DESTINATIONS = 50, 500
SECRETS_KEY = "62656e63682d6b61726e616b2d636f6e736f6c652d70616765732d6b65792121"


def destination(number: int) -> dict[str, Any]:
    if number % 5 == 4:
        return {
            "id": f"stow-{number}",
            "type": "stow",
            "description": f"archive {number}",
            "url": f"https://pacs{number}.example.org/dicomweb/studies",
            "headers": {"Authorization": f"Bearer token-of-destination-{number:04d}"},
            "enabled": number % 7 != 0,
        }
    return {
        "id": f"pacs-{number}",
        "type": "dicom",
        "description": f"PACS {number}",
        "ae_title": f"PACS{number}",
        "hostname": f"pacs{number}.example.org",
        "port": 104 + number % 1000,
        "condition": "tagValueContains(#Tag.Modality, 'CT')" if number % 3 == 0 else "",
        "notifications": {"emails": [f"team{number}@example.org"]} if number % 4 == 0 else None,
        "enabled": number % 7 != 0,
    }


def routing(spread: bool) -> dict[str, Any]:
    nodes = [
        {"ae_title": f"NODE-{n:02d}", "description": f"forward node {n}", "destinations": []} for n in range(NODES)
    ]
    for number in range(DESTINATIONS):
        node = nodes[number % NODES] if spread else nodes[0]
        dest = {k: v for k, v in destination(number).items() if v is not None}
        node["destinations"].append(dest)
    for node in nodes:
        node["sources"] = [{"ae_title": f"CT{n}", "hostname": f"ct{n}.example.org"} for n in range(3)]
    return {"forward_nodes": nodes}


def start(folder: Path, spread: bool, amqp_url: str) -> tuple[Console, TestClient]:
    config = {
        "database": {"url": f"sqlite:///{folder / 'console.db'}"},
        "secrets": {"key": SECRETS_KEY},
        "broker": {"url": amqp_url, "prefix": f"karnak-bench-{uuid.uuid4().hex[:8]}"},
        "console": {"admin_password_file": str(folder / "admin-password")},
        **routing(spread),
    }
    path = folder / "karnak.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    store = open_store(load_config(path))
    console = Console.build(store, status=False, announce=False)
    console.accounts.add_user("bench", "admin", "bench-password")
    client = TestClient(create_app(console))
    login = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token is not None
    signed = client.post(
        "/login", data={"username": "bench", "password": "bench-password", "csrf_token": token.group(1)}
    )
    assert signed.status_code == 200 and "bench (admin)" in signed.text, signed.status_code
    return console, client


def timed(client: TestClient, url: str, rounds: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each request (the app runs in this process: its CPU time is the
    work itself, which other processes on a busy machine do not inflate)."""
    answer = client.get(url)  # the first request warms the caches (the masked view of the revision)
    assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    wall, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        answer = client.get(url)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert answer.status_code == 200
    return wall, cpu


def report(label: str, times: tuple[list[float], list[float]], size: int) -> bool:
    wall, cpu = times
    ordered = sorted(wall)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    median = statistics.median(wall)
    ok = median < TARGET_MS
    print(
        f"{label:<54} median {median:6.1f} ms  p95 {p95:6.1f} ms  max {max(wall):6.1f} ms"
        f"  cpu {statistics.median(cpu):6.1f} ms  {size / 1024:4.0f} KiB  {'ok' if ok else 'OVER'}"
    )
    return ok


def broker_answers(url: str) -> bool:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url + "?socket_timeout=2&connection_attempts=1")).close()
    except Exception:  # noqa: BLE001 - any failure means no broker for this run
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    amqp_url = os.environ.get("KARNAK_BENCH_AMQP_URL", "amqp://guest:guest@localhost:5672/")
    with_broker = broker_answers(amqp_url)
    print(f"console pages: {NODES} forward nodes, {DESTINATIONS} destinations, {args.rounds} rounds per page")
    print(
        f"verdict: median under {TARGET_MS:.0f} ms; load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    all_ok = True
    for spread, layout in ((True, "10 destinations per node"), (False, "all 500 on NODE-00")):
        with tempfile.TemporaryDirectory() as folder:
            console, client = start(Path(folder), spread, amqp_url)
            try:
                pages = [
                    ("/gateway", "forward nodes list"),
                    ("/gateway/NODE-00", "NODE-00 with its destinations list"),
                    ("/gateway/NODE-00?tab=sources", "NODE-00 sources"),
                    ("/gateway/NODE-00/destinations/pacs-0", "DICOM destination form"),
                    ("/gateway/NODE-00/new-destination/stow", "new STOW destination form"),
                ]
                print(f"-- {layout}")
                for url, label in pages:
                    size = len(client.get(url).content)
                    all_ok &= report(label, timed(client, url, args.rounds), size)
                if with_broker:
                    # Not a page: htmx asks for it once the list is shown (one passive declare per queue).
                    url = "/gateway/NODE-00/destinations-activity"
                    size = len(client.get(url).content)
                    report(
                        "(after the page) activity and queue depths, RabbitMQ", timed(client, url, args.rounds), size
                    )
            finally:
                client.close()
                console.store.close()
                console.accounts.engine.dispose()
    if not with_broker:
        print(f"activity and queue depths: skipped (no RabbitMQ at {amqp_url})")
    print("all pages under the target" if all_ok else "some pages over the target")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
