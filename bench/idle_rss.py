"""Resident memory of each service when it has nothing to do, beside the same service with work configured.

`karnak up` runs twice on this machine's RabbitMQ (or $KARNAK_TEST_AMQP_URL), each time on a prefix of its
own: first with a configuration that gives the stow-sender, the kheops-sharer and the notifier nothing
(one DICOM destination, no STOW destination, no album, no notification), then with one that gives each
of them work (a STOW destination with a Kheops album and notifications; nothing needs to answer, no
instance is sent). Once every service is ready and `--settle` seconds have passed, VmRSS of each service
process is read from /proc and printed as a table (MB).

    .venv/bin/python bench/idle_rss.py [--settle 10]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

SERVICES = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier")
STARTED = re.compile(r"karnak up: start(?:ed|ing) (\S+) \(pid (\d+)\)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(workdir: Path, amqp_url: str, busy: bool) -> dict[str, Any]:
    destinations: list[dict[str, Any]] = [
        {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": _free_port()}
    ]
    if busy:
        destinations.append(
            {
                "id": "web",
                "type": "stow",
                "url": f"http://127.0.0.1:{_free_port()}/dicom-web/studies",
                "notifications": {"emails": ["ops@example.org"], "interval": 60},
                "kheops_albums": [
                    {
                        "url_api": f"http://127.0.0.1:{_free_port()}/api",
                        "token_destination": "destination-token",
                        "token_source": "source-token",
                    }
                ],
            }
        )
    return {
        "listener": {"host": "127.0.0.1", "port": _free_port()},
        "forward_nodes": [{"ae_title": "KARNAK-GW", "destinations": destinations}],
        "broker": {"url": amqp_url, "prefix": f"karnak-bench-idle-{uuid.uuid4().hex[:8]}"},
        "blob_store": {"path": str(workdir / "blobs")},
        "database": {"url": f"sqlite:///{workdir / 'karnak.db'}"},
        "smtp": {"host": "127.0.0.1", "port": _free_port()},
        "metrics": {"host": "127.0.0.1", "ports": {s: _free_port() for s in SERVICES}},
        # Revisions store the album tokens encrypted with it (a bench key, never a production one).
        "secrets": {"key": base64.b64encode(os.urandom(32)).decode()},
    }


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(amqp_url: str, busy: bool, settle: float) -> dict[str, float]:
    """VmRSS (MB) of each service of one `karnak up`, once every service is ready and `settle` s passed."""
    with tempfile.TemporaryDirectory(prefix="karnak-idle-") as tmp:
        workdir = Path(tmp)
        config = _config(workdir, amqp_url, busy)
        path = workdir / "karnak.yml"
        path.write_text(yaml.safe_dump(config))
        karnak = str(Path(sys.executable).with_name("karnak"))
        log = workdir / "up.log"
        process = subprocess.Popen(
            [karnak, "up", "--config", str(path)], stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            deadline = time.monotonic() + 60
            ports = config["metrics"]["ports"]
            while not all(_ready(port) for port in ports.values()):
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the gateway did not get ready:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.5)
            time.sleep(settle)
            pids = {m.group(1): int(m.group(2)) for m in STARTED.finditer(log.read_text(errors="replace"))}
            return {service: _rss_mb(pids[service]) for service in SERVICES}
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after ready before reading RSS")
    args = parser.parse_args()
    amqp_url = os.environ.get("KARNAK_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672/")
    idle = measure(amqp_url, busy=False, settle=args.settle)
    busy = measure(amqp_url, busy=True, settle=args.settle)
    print(f"VmRSS per service (MB), {args.settle:g} s after every service was ready")
    print(f"{'service':<15}{'nothing to do':>15}{'work configured':>17}")
    for service in SERVICES:
        print(f"{service:<15}{idle[service]:>15.1f}{busy[service]:>17.1f}")


if __name__ == "__main__":
    main()
