"""Where the gateway's CPU goes: CPU time per instance of each service (user and system), RabbitMQ's beside.

One `karnak up --replicas 1` per round, storescu sends `--count` CT of 0.53 MB through basic-profile
de-identification to DCMTK's storescp, and every de-identified SOP Instance UID must arrive (as in
bench/gateway.py, whose gateway set-up it uses). CPU times come from /proc/<pid>/stat before and after
the run, so other work on the machine does not count against a service (its wall-clock rate does).
With `--perf` or `--py-spy`, each service is sampled during the run (perf: `cpu-clock` with call
graphs, native and kernel symbols; py-spy: `--gil`, the Python thread holding the GIL) and the files
are left in `--out` (`perf report -i <service>.perf --no-children --sort dso,sym`).

    .venv/bin/python bench/service_cpu.py [--count 300] [--rounds 3] [--perf | --py-spy] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gateway

from karnak_dicom.testing import write_ct_series
from karnak_shared.service.testing.servers import find_broker, storescu, wait_until

SERVICES = ("receiver", "processor", "dicom-sender")


def user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rabbitmq_pid() -> int | None:
    """The local RabbitMQ's Erlang VM, when it runs on this machine (shared: other clients count too)."""
    found = subprocess.run(["pgrep", "-f", "beam.smp.*rabbit"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def samplers(kind: str | None, processes: dict[str, int], out: Path) -> list[subprocess.Popen[bytes]]:
    started = []
    for label, pid in processes.items():
        if kind == "perf":
            command = ["perf", "record", "-e", "cpu-clock", "-F", "1000", "-g", "-p", str(pid)]
            command += ["-o", str(out / f"{label}.perf")]
        elif kind == "py-spy":
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            command = [py_spy, "record", "--pid", str(pid), "--gil", "--rate", "200", "--format", "raw"]
            command += ["--output", str(out / f"{label}.txt")]
        else:
            continue
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if started:
        time.sleep(1.5)  # attached before the first instance
    return started


def _delivered(pacs: gateway.Pacs, expected: set[str]) -> bool:
    return pacs.arrived() >= expected


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300, help="0.5 MB CT instances per round")
    parser.add_argument("--rounds", type=int, default=3, help="gateway runs, one line each")
    sampler = parser.add_mutually_exclusive_group()
    sampler.add_argument("--perf", action="store_const", const="perf", dest="sampler", help="perf record each service")
    sampler.add_argument("--py-spy", action="store_const", const="py-spy", dest="sampler", help="py-spy --gil each")
    parser.add_argument("--out", type=Path, default=Path("service-cpu"), help="folder of the samplers' files")
    args = parser.parse_args()
    if args.sampler:
        args.out.mkdir(parents=True, exist_ok=True)
    url, _ = find_broker()
    print(f"{args.count} CT per round, one replica; CPU ms per instance: total (user/system)")
    with tempfile.TemporaryDirectory(prefix="karnak-bench-") as tmp:
        bench = gateway.Bench(Path(tmp), url)
        paths = write_ct_series(Path(tmp) / "study", args.count)
        expected = bench.expected_uids(paths)
        for _ in range(args.rounds):
            running, pacs, config = bench.start_gateway(1)
            try:
                services = {k: v for k, v in gateway._processes(running).items() if k.split("#")[0] in SERVICES}
                sampling = samplers(args.sampler, services, args.out)
                measured = dict(services)
                broker = rabbitmq_pid()
                if broker is not None:
                    measured["rabbitmq"] = broker
                before = {label: user_system(pid) for label, pid in measured.items()}
                started = time.perf_counter()
                result = storescu(running.listener_port, "KARNAK-GW", "CT01", paths, timeout=1800)
                if result.returncode != 0:
                    raise RuntimeError(f"storescu -> gateway failed: {result.stderr[-2000:]}")
                arrived = functools.partial(_delivered, pacs, expected)
                wait_until(arrived, 1800, "every instance delivered", interval=0.01)
                seconds = time.perf_counter() - started
                after = {label: user_system(pid) for label, pid in measured.items()}
                for process in sampling:
                    process.send_signal(signal.SIGINT)
                for process in sampling:
                    process.wait(timeout=60)
            finally:
                dead = bench.stop_gateway(running, pacs, config)
            if dead:
                raise RuntimeError(f"{dead} message(s) in the dead-letter queue")
            cells, total = [], 0.0
            for label in sorted(measured):
                user = (after[label][0] - before[label][0]) * 1000 / args.count
                system = (after[label][1] - before[label][1]) * 1000 / args.count
                if label != "rabbitmq":
                    total += user + system
                cells.append(f"{label} {user + system:.2f} ({user:.2f}/{system:.2f})")
            rate = args.count / seconds
            print(f"{rate:6.1f} inst/s | " + " | ".join(cells) + f" | services {total:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
