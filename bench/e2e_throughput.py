"""End-to-end throughput: storescu -> gateway (karnak up) -> storescp, beside storescu -> storescp direct.

Prints instances/s for both and their ratio, measured in the same run on the same files, and the
latency (received -> delivered) percentiles the dicom-sender measured. Needs RabbitMQ on localhost (or
$KARNAK_TEST_AMQP_URL) and DCMTK.

    .venv/bin/python bench/e2e_throughput.py [--count 300] [--replicas 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pika

from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.conftest import gateway_config
from tests.support.dicomdata import make_study
from tests.support.servers import Gateway, StoreSCP, find_broker, free_port, storescu, wait_until


def _histogram_quantile(text: str, name: str, quantile: float) -> float:
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= quantile * total:
            return bound
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300, help="0.5 MB CT instances to send")
    parser.add_argument("--replicas", type=int, default=1, help="processor and dicom-sender processes")
    args = parser.parse_args()
    url, _ = find_broker()
    with tempfile.TemporaryDirectory(prefix="karnak-bench-") as tmp:
        work = Path(tmp)
        study = make_study(work / "study", ct=args.count, mr=0, multiframe=0, large=0, compressed=0)
        size_mb = sum(p.stat().st_size for p in study.paths) / 1e6

        direct = StoreSCP("DIRECT", free_port(), work / "direct").start()
        started = time.perf_counter()
        result = storescu(direct.port, "DIRECT", "CT01", study.paths)
        direct_seconds = time.perf_counter() - started
        direct.stop()
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1

        pacs = StoreSCP("PACS", free_port(), work / "pacs").start()
        prefix = f"karnak-bench-{uuid.uuid4().hex[:8]}"
        destination = {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": pacs.port}
        config = gateway_config(url, prefix, work, [destination])
        config["logging"] = {"level": "WARNING"}
        gateway = Gateway(config, work).start("--replicas", str(args.replicas))
        try:
            started = time.perf_counter()
            result = storescu(gateway.listener_port, "KARNAK-GW", "CT01", study.paths)
            accepted_seconds = time.perf_counter() - started
            wait_until(lambda: len(pacs.files()) >= args.count, 600, "all instances delivered", interval=0.02)
            gateway_seconds = time.perf_counter() - started
            metrics = gateway.metrics("dicom-sender")
        finally:
            gateway.stop()
            pacs.stop()
            connection = pika.BlockingConnection(pika.URLParameters(url))
            Topology.from_config(parse_config(json.dumps(config))).delete(connection.channel())
            connection.close()

    direct_rate = args.count / direct_seconds
    gateway_rate = args.count / gateway_seconds
    each = size_mb / args.count
    print(f"instances: {args.count} CT of {each:.2f} MB; replicas: {args.replicas}; cores: {os.cpu_count()}")
    print(f"{'path':<44} {'seconds':>8} {'inst/s':>8}")
    print(f"{'storescu -> storescp (direct)':<44} {direct_seconds:8.2f} {direct_rate:8.1f}")
    accepted_rate = args.count / accepted_seconds
    print(f"{'storescu -> gateway (C-STORE answered)':<44} {accepted_seconds:8.2f} {accepted_rate:8.1f}")
    print(f"{'storescu -> gateway -> storescp (delivered)':<44} {gateway_seconds:8.2f} {gateway_rate:8.1f}")
    print(f"ratio gateway / direct: {gateway_rate / direct_rate:.2f}")
    p50 = _histogram_quantile(metrics, "karnak_instance_transit_seconds", 0.5)
    p99 = _histogram_quantile(metrics, "karnak_instance_transit_seconds", 0.99)
    print(f"transit received -> delivered (histogram bucket bounds, at full load): p50 <= {p50} s, p99 <= {p99} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
