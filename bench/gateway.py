"""The gateway end to end, with basic-profile de-identification: throughput, latency, memory, scaling.

What it runs, all on this machine and printed as tables (issue 7):

1. DCMTK `storescu` -> `storescp` directly: the physical limit of this machine for the same files.
2. `storescu` -> receiver -> processor (de-identification with the DICOM basic profile) -> dicom-sender ->
   `storescp`, started with `karnak up --replicas N` for each N of `--replicas`: instances/s until the last
   one is delivered, the ratio to the direct figure, peak RSS (VmHWM) of every service process; every
   de-identified SOP Instance UID is checked at the destination and the dead-letter queue must be empty.
3. Latency received -> delivered at half the maximum rate found in 2 (one replica): a pynetdicom SCU sends
   at a steady pace; "received" is the C-STORE answer (the instance is stored and its message confirmed),
   "delivered" is when the file appears in storescp's folder.
4. The same stream with one large multi-frame instance (300 MB by default) in its middle: peak RSS of each
   service beside the run without it, and how many copies of the large instance that makes.

DCMTK's tools run with TCP_NODELAY=1. RabbitMQ is the local broker (or $KARNAK_TEST_AMQP_URL).

    .venv/bin/python bench/gateway.py [--count 500] [--replicas 1 2 4] [--repeat 3] [--large-mb 300]
                                      [--latency-seconds 20] [--slow-pacs-ms 20] [--plain] [--unsigned]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
from pydicom import dcmread, dcmwrite
from pynetdicom import AE, evt
from workload import BASIC_PROFILE, SECRET, SECRET_TEXT, build_multiframe

from karnak_dicom.deid import uid_hash
from karnak_dicom.testing import write_ct_series
from karnak_shared.config import parse_config
from karnak_shared.service.testing.servers import (
    Gateway,
    ScriptedSCP,
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


@dataclass
class GatewayRun:
    """What one run through the gateway measured."""

    replicas: int
    count: int
    accepted_seconds: float
    delivered_seconds: float
    peak_rss: dict[str, int] = field(default_factory=dict)  # process label -> bytes
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process label -> CPU time during the run
    machine_busy: float = 0.0  # share of all cores busy (any process) between first send and last delivery

    @property
    def rate(self) -> float:
        return self.count / self.delivered_seconds


def cpu_time(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_times() -> tuple[int, int]:
    """(total, idle) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


class Pacs:
    """The destination: DCMTK's storescp, or, with a delay, a pynetdicom SCP slow to answer (a distant PACS)."""

    def __init__(self, run_dir: Path, delay: float = 0.0) -> None:
        self.directory = run_dir / "pacs"
        self._slow = ScriptedSCP("PACS", free_port(), delay=delay).start() if delay else None
        self._storescp = None if delay else StoreSCP("PACS", free_port(), self.directory).start()

    @property
    def port(self) -> int:
        return self._slow.port if self._slow else self._storescp.port  # type: ignore[union-attr]

    def arrived(self) -> set[str]:
        """SOP Instance UIDs received so far (storescp names its files `CT.<uid>`)."""
        if self._slow is not None:
            return set(self._slow.received)
        return {_sop_uid(entry.name) for entry in os.scandir(self.directory)}

    def stop(self) -> None:
        (self._slow or self._storescp).stop()  # type: ignore[union-attr]


class Bench:
    """One working folder, the broker, and the gateway configuration every run shares."""

    def __init__(self, work: Path, url: str, *, deidentify: bool = True, unsigned: bool = False) -> None:
        self.work = work
        self.url = url
        self.deidentify = deidentify
        self.unsigned = unsigned
        self.profile = work / "basic-profile.yml"
        self.profile.write_text(BASIC_PROFILE)

    def sent_uid(self, uid: str) -> str:
        """The SOP Instance UID an instance arrives with: de-identified as the project's secret makes it."""
        return uid_hash(SECRET, uid) if self.deidentify else uid

    def expected_uids(self, paths: list[Path]) -> set[str]:
        """The SOP Instance UIDs the destination must receive for these files."""
        return {self.sent_uid(str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)) for path in paths}

    def direct(self, paths: list[Path]) -> float:
        """Seconds for storescu -> storescp with the same files."""
        scp = StoreSCP("DIRECT", free_port(), self.work / f"direct-{uuid.uuid4().hex[:6]}").start()
        try:
            started = time.perf_counter()
            result = storescu(scp.port, "DIRECT", "CT01", paths, timeout=1800)
            seconds = time.perf_counter() - started
        finally:
            scp.stop()
        if result.returncode != 0:
            raise RuntimeError(f"storescu -> storescp failed: {result.stderr[-2000:]}")
        return seconds

    def start_gateway(self, replicas: int, pacs_delay: float = 0.0) -> tuple[Gateway, Pacs, dict[str, Any]]:
        run_dir = self.work / f"run-{uuid.uuid4().hex[:6]}"
        run_dir.mkdir()
        pacs = Pacs(run_dir, pacs_delay)
        prefix = f"karnak-bench-{uuid.uuid4().hex[:8]}"
        destination = {
            "id": "research",
            "type": "dicom",
            "ae_title": "PACS",
            "hostname": "127.0.0.1",
            "port": pacs.port,
        }
        if self.deidentify:
            destination["deidentification"] = {"project": "bench"}
        config = gateway_config(self.url, prefix, run_dir, [destination])
        config["projects"] = [{"name": "bench", "secret": SECRET_TEXT, "profile": str(self.profile)}]
        config["logging"] = {"level": "WARNING"}
        if self.unsigned:
            del config["secrets"]  # no secrets.key: messages neither signed nor checked
        try:
            gateway = Gateway(config, run_dir).start("--replicas", str(replicas), timeout=60)
        except BaseException:
            pacs.stop()
            raise
        return gateway, pacs, config

    def stop_gateway(self, gateway: Gateway, pacs: Pacs, config: dict[str, Any]) -> int:
        """Stop everything, delete the run's queues; return how many messages the dead queue held."""
        gateway.stop()
        pacs.stop()
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            topology = Topology.from_config(parse_config(json.dumps(config)))
            channel = connection.channel()
            dead = channel.queue_declare(topology.dead_queue, passive=True).method.message_count
            topology.delete(channel)
        finally:
            connection.close()
        return int(dead)

    def through_gateway(
        self, paths: list[Path], replicas: int, expected: set[str], pacs_delay: float = 0.0
    ) -> GatewayRun:
        """storescu -> gateway -> the PACS; every expected instance must arrive and nothing may be parked."""
        gateway, pacs, config = self.start_gateway(replicas, pacs_delay)
        dead = -1
        try:
            processes = _processes(gateway)
            cpu_before = {label: cpu_time(pid) for label, pid in processes.items()}
            total_before, idle_before = machine_times()
            started = time.perf_counter()
            result = storescu(gateway.listener_port, "KARNAK-GW", "CT01", paths, timeout=1800)
            accepted = time.perf_counter() - started
            if result.returncode != 0:
                raise RuntimeError(f"storescu -> gateway failed: {result.stderr[-2000:]}\n{gateway.log()[-3000:]}")
            wait_until(lambda: pacs.arrived() >= expected, 1800, "every instance delivered", interval=0.01)
            delivered = time.perf_counter() - started
            total_after, idle_after = machine_times()
            cpu = {label: cpu_time(pid) - cpu_before[label] for label, pid in processes.items()}
            peaks = {label: resident_bytes(pid, "VmHWM") for label, pid in processes.items()}
        finally:
            dead = self.stop_gateway(gateway, pacs, config)
        if dead:
            raise RuntimeError(f"{dead} message(s) in the dead-letter queue: see {gateway.log_path}")
        busy = 1 - (idle_after - idle_before) / max(1, total_after - total_before)
        return GatewayRun(replicas, len(paths), accepted, delivered, peaks, cpu, busy)

    def latency(self, paths: list[Path], rate: float, seconds: float) -> list[float]:
        """Received -> delivered seconds of instances sent at `rate` per second for about `seconds`."""
        count = min(len(paths), max(10, int(rate * seconds)))
        gateway, pacs, config = self.start_gateway(1)
        seen: dict[str, float] = {}
        answered: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                now = time.perf_counter()
                for uid in pacs.arrived():
                    seen.setdefault(uid, now)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        ae = AE(ae_title="CT01")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
        handlers = [(evt.EVT_CONN_OPEN, _nodelay)]
        try:
            assoc = ae.associate("127.0.0.1", gateway.listener_port, ae_title="KARNAK-GW", evt_handlers=handlers)
            if not assoc.is_established:
                raise RuntimeError("the gateway refused the association")
            datasets = [dcmread(path) for path in paths[:count]]
            started = time.perf_counter()
            for index, ds in enumerate(datasets):
                pause = started + index / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                status = assoc.send_c_store(ds)
                if getattr(status, "Status", None) != 0:
                    raise RuntimeError(f"C-STORE answered {status}")
                answered[self.sent_uid(str(ds.SOPInstanceUID))] = time.perf_counter()
            assoc.release()
            wait_until(lambda: set(answered) <= set(seen), 300, "every paced instance delivered", interval=0.01)
        finally:
            stop.set()
            watcher.join()
            dead = self.stop_gateway(gateway, pacs, config)
        if dead:
            raise RuntimeError(f"{dead} message(s) in the dead-letter queue: see {gateway.log_path}")
        return sorted(max(0.0, seen[name] - at) for name, at in answered.items())


def _nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _sop_uid(file_name: str) -> str:
    """storescp names a file after the modality and the SOP Instance UID: `CT.1.2.3`."""
    return file_name.split(".", 1)[1] if "." in file_name else file_name


def _processes(gateway: Gateway) -> dict[str, int]:
    found = {label: int(pid) for label, pid in STARTED.findall(gateway.log())}
    if not found:
        raise RuntimeError("no service process found in karnak up's output")
    return found


def _median_run(runs: list[GatewayRun]) -> GatewayRun:
    return sorted(runs, key=lambda run: run.rate)[(len(runs) - 1) // 2]


def _range(rates: list[float]) -> str:
    return f"({min(rates):.0f} to {max(rates):.0f})" if len(rates) > 1 else ""


def _percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, max(0, round(fraction * len(values)) - 1))]


def _mb(value: float) -> str:
    return f"{value / 1e6:.0f}"


def _service(label: str) -> str:
    return label.split("#", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500, help="0.5 MB CT instances per run")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4], help="processor and sender processes")
    parser.add_argument("--large-mb", type=int, default=300, help="size of the multi-frame instance; 0 skips it")
    parser.add_argument("--latency-seconds", type=float, default=20, help="length of the paced run; 0 skips it")
    parser.add_argument("--plain", action="store_true", help="no de-identification: the bytes go through as sent")
    parser.add_argument(
        "--unsigned", action="store_true", help="no secrets.key: messages are not signed (to measure the HMAC's cost)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per replica count (median shown)")
    parser.add_argument(
        "--slow-pacs-ms", type=float, default=20, help="answer delay of the PACS in the second scaling run; 0 skips it"
    )
    args = parser.parse_args()
    url, _ = find_broker()
    with tempfile.TemporaryDirectory(prefix="karnak-bench-") as tmp:
        work = Path(tmp)
        bench = Bench(work, url, deidentify=not args.plain, unsigned=args.unsigned)
        paths = write_ct_series(work / "study", args.count)
        each_mb = statistics.mean(p.stat().st_size for p in paths) / 1e6
        expected = bench.expected_uids(paths)

        # Rounds interleave the replica counts, so that a slower minute of the machine hits them all alike.
        direct_runs: list[float] = []
        grouped: dict[int, list[GatewayRun]] = {replicas: [] for replicas in args.replicas}
        for _ in range(args.repeat):
            direct_runs.append(bench.direct(paths))
            for replicas in args.replicas:
                grouped[replicas].append(bench.through_gateway(paths, replicas, expected))
        direct_seconds = statistics.median(direct_runs)
        direct_rate = args.count / direct_seconds
        runs = [_median_run(grouped[replicas]) for replicas in args.replicas]
        what = "no de-identification" if args.plain else "basic-profile de-identification"
        signing = "messages unsigned" if args.unsigned else "messages signed (HMAC-SHA256)"
        print(f"instances: {args.count} CT of {each_mb:.2f} MB, {what}, {signing}; cores: {os.cpu_count()}")
        print(f"each figure: the median of {args.repeat} run(s), with the range of inst/s")
        print()
        print("| path | replicas | answered (s) | delivered (s) | inst/s (range) | ratio to direct | cores busy |")
        print("|---|---|---|---|---|---|---|")
        direct_range = _range([args.count / seconds for seconds in direct_runs])
        print(
            f"| storescu → storescp (direct) | - | - | {direct_seconds:.2f} | {direct_rate:.1f} {direct_range} | "
            "1.00 | - |"
        )
        for run in runs:
            spread = _range([other.rate for other in grouped[run.replicas]])
            print(
                f"| storescu → gateway → storescp | {run.replicas} | {run.accepted_seconds:.2f} | "
                f"{run.delivered_seconds:.2f} | {run.rate:.1f} {spread} | {run.rate / direct_rate:.2f} | "
                f"{run.machine_busy * 100:.0f} % |"
            )
        print()
        print("CPU time per instance (ms), summed over each service's processes:")
        services = sorted({_service(label) for run in runs for label in run.cpu_seconds})
        print("| replicas | " + " | ".join(services) + " |")
        print("|---|" + "---|" * len(services))
        for run in runs:
            per_service = {name: 0.0 for name in services}
            for label, seconds in run.cpu_seconds.items():
                per_service[_service(label)] += seconds
            cells = " | ".join(f"{1000 * per_service[name] / run.count:.2f}" for name in services)
            print(f"| {run.replicas} | {cells} |")
        base = next((run for run in runs if run.replicas == 1), runs[0])

        if args.slow_pacs_ms > 0:
            delay = args.slow_pacs_ms / 1000
            slow_runs = [bench.through_gateway(paths, replicas, expected, delay) for replicas in args.replicas]
            print()
            print(f"scaling when the PACS takes {args.slow_pacs_ms:g} ms to answer each C-STORE (a distant PACS):")
            print("| replicas | delivered (s) | inst/s | cores busy |")
            print("|---|---|---|---|")
            for run in slow_runs:
                busy = f"{run.machine_busy * 100:.0f} %"
                print(f"| {run.replicas} | {run.delivered_seconds:.2f} | {run.rate:.1f} | {busy} |")

        latencies: list[float] = []
        if args.latency_seconds > 0:
            pace = base.rate / 2
            latencies = bench.latency(paths, pace, args.latency_seconds)
            print()
            print(f"latency received → delivered at {pace:.1f} inst/s (half of {base.rate:.1f}), one replica:")
            print("| instances | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |")
            print("|---|---|---|---|---|")
            print(
                f"| {len(latencies)} | {_percentile(latencies, 0.5) * 1000:.0f} | "
                f"{_percentile(latencies, 0.9) * 1000:.0f} | {_percentile(latencies, 0.99) * 1000:.0f} | "
                f"{latencies[-1] * 1000:.0f} |"
            )

        large_run: GatewayRun | None = None
        if args.large_mb > 0:
            big = work / "large" / "multiframe.dcm"
            big.parent.mkdir()
            study_uid = str(dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
            dcmwrite(big, build_multiframe(study_uid, args.large_mb * 10**6), enforce_file_format=True)
            size = big.stat().st_size
            half = len(paths) // 2
            stream = [*paths[:half], big, *paths[half:]]
            large_run = bench.through_gateway(stream, 1, expected | bench.expected_uids([big]))
            print()
            print(f"peak RSS (MB) per service process, one replica; large instance: {size / 1e6:.0f} MB")
            print(f"| service | {args.count} CT | {args.count} CT + the large one | extra, in copies of it |")
            print("|---|---|---|---|")
            for label, plain in sorted(base.peak_rss.items()):
                with_large = large_run.peak_rss.get(label, 0)
                copies = (with_large - plain) / size
                print(f"| {label} | {_mb(plain)} | {_mb(with_large)} | {copies:.2f} |")
        else:
            print()
            print(f"peak RSS (MB) per service process, {args.count} CT, one replica:")
            print("| service | peak RSS (MB) |")
            print("|---|---|")
            for label, plain in sorted(base.peak_rss.items()):
                print(f"| {label} | {_mb(plain)} |")
        for run in runs:
            if run.replicas > 1:
                totals: dict[str, int] = {}
                for label, value in run.peak_rss.items():
                    totals[_service(label)] = totals.get(_service(label), 0) + value
                summary = ", ".join(f"{name} {_mb(value)}" for name, value in sorted(totals.items()))
                print(f"replicas {run.replicas}: summed peak RSS (MB) {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
