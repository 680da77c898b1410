"""Offline de-identification speed: instances/s of 0.5 MB CTs through the basic profile on one core.

Builds realistic CT instances with pydicom in a temporary folder (about 110 attributes: the patient, study,
series, equipment and image modules, a few sequences, two private blocks, 512 x 512 x 16-bit pixels), then
in one process times (CPU time) what the processor does for a de-identified copy: `dcmread` (large values deferred) +
`Deidentifier.apply` + `encode_part10` (the processor's Part 10 writer) to memory, beside the same read + write
without de-identification and pydicom's own `dcmwrite`, in interleaved rounds. Then the encoding cost of each
transfer syntax a destination may ask for: `transcode` + `encode_part10` of the first `--transcoded` CTs
(12 bits stored), less the same read + write without it, with the compression ratio.

    .venv/bin/python bench/deid.py [--instances 200] [--rounds 5] [--profile PATH] [--transcoded 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

from pydicom import dcmread, dcmwrite
from workload import BASIC_PROFILE, SECRET, write_ct_series

from karnak_dicom.deid import Deidentifier, hash_pseudonym, load_profile
from karnak_dicom.syntaxes import ENCODABLE
from karnak_dicom.transcoding import SyntaxNotCarried, encode_part10, transcode
from karnak_processor.transformation import DEFER_BYTES


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=200, help="CT instances to build and process")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes over all instances (median kept)")
    parser.add_argument("--profile", type=Path, help="a profile YAML instead of the basic profile")
    parser.add_argument("--transcoded", type=int, default=20, help="CT instances per transfer syntax timed")
    args = parser.parse_args()

    profile = load_profile(args.profile if args.profile else BASIC_PROFILE)
    engine = Deidentifier.for_project(profile, "bench", SECRET)
    with tempfile.TemporaryDirectory() as folder:
        paths = write_ct_series(Path(folder), args.instances)
        size = paths[0].stat().st_size
        attributes = len(dcmread(paths[0], stop_before_pixels=True))

        def run(deidentify: bool, pydicom_writer: bool = False) -> float:
            # CPU time of this process: other work on the machine does not count against the engine.
            start = time.process_time()
            for path in paths:
                stream = path.open("rb")  # as the processor reads a blob file
                ds = dcmread(stream, defer_size=DEFER_BYTES)
                if deidentify:
                    engine.apply(ds, hash_pseudonym(SECRET, str(ds.PatientID)))
                if pydicom_writer:
                    dcmwrite(BytesIO(), ds, enforce_file_format=True)
                else:
                    encode_part10(ds, source=stream)
                stream.close()
            return len(paths) / (time.process_time() - start)

        run(True)  # warm the caches (file system, profile plans)
        plain_rates, deid_rates, pydicom_rates = [], [], []
        for _ in range(args.rounds):  # interleaved, so all see the same machine
            plain_rates.append(run(False))
            deid_rates.append(run(True))
            pydicom_rates.append(run(True, pydicom_writer=True))
        plain, deid = statistics.median(plain_rates), statistics.median(deid_rates)
        with_dcmwrite = statistics.median(pydicom_rates)
        costs = transcoding_costs(paths[: args.transcoded], args.rounds)
    print(f"instance: {size / 1e6:.2f} MB, {attributes} attributes before pixel data; profile: {profile.name}")
    print(f"dcmread + encode_part10 only:                {plain:7.1f} instances/s")
    print(f"dcmread + de-identification + encode_part10: {deid:7.1f} instances/s (one core, median of {args.rounds})")
    print(f"  the same with pydicom's dcmwrite:          {with_dcmwrite:7.1f} instances/s")
    print(f"de-identification alone: {1000 / deid - 1000 / plain:.2f} ms per instance")
    print(f"\nencoding cost per 0.5 MB CT (12 of 16 bits), CPU ms beyond read + write, median of {args.rounds}:")
    print(f"  {'UID':<24} {'ms':>6} {'ratio':>6}  transfer syntax")
    for uid, name, milliseconds, ratio in costs:
        if ratio is None:
            name += " (cannot carry 12 bits: sent in Explicit VR Little Endian)"
        figures = f"{milliseconds:6.1f} {ratio:6.2f}" if ratio else f"{'-':>6} {'-':>6}"
        print(f"  {uid:<24} {figures}  {name}")
    return 0


def transcoding_costs(paths: list[Path], rounds: int) -> list[tuple[str, str, float, float | None]]:
    """(UID, name, CPU ms per instance beyond read + write, ratio or None when the syntax cannot carry a CT)."""

    def run(target: str | None) -> tuple[float, int]:
        start, written = time.process_time(), 0
        for path in paths:
            with path.open("rb") as stream:
                ds = dcmread(stream, defer_size=DEFER_BYTES)
                if target is not None:
                    try:
                        transcode(ds, target)
                    except SyntaxNotCarried:
                        return 0.0, 0
                written += len(encode_part10(ds, source=stream))
        return (time.process_time() - start) * 1000 / len(paths), written

    run(None)  # warm the file system cache
    results = []
    for syntax in ENCODABLE:
        times, written = [], 0
        for _ in range(rounds):  # each syntax beside its own read + write, on the same machine state
            plain, native = run(None)
            milliseconds, written = run(syntax.uid)
            times.append(milliseconds - plain)
        ratio = native / written if written else None
        results.append((syntax.uid, syntax.name, max(0.0, statistics.median(times)), ratio))
    return results


if __name__ == "__main__":
    sys.exit(main())
