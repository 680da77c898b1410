"""Running an atheris harness for a bounded time, and replaying the inputs it once crashed on.

A harness is a module with `one_input(data: bytes) -> None` (raises only on a real fault) and
`seeds() -> list[bytes]`; run as a script it fuzzes (`python -m tests.<...> -max_total_time=60 corpus`).
A crash found becomes a file under `tests/<subject>/crashes/<harness>/` and a regression test replays it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fuzz_main(one_input: Callable[[bytes], None], seeds: Callable[[], list[bytes]]) -> None:
    """The harness's `__main__`: write the seeds into the corpus directory, then let atheris run."""
    import atheris

    corpus = next((Path(a) for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None:
        corpus.mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(seeds()):
            (corpus / f"seed-{number:04d}").write_bytes(seed)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


def run_harness(module: str, workdir: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    """Fuzz `module` for `seconds`; a crash leaves `crash-*` in `workdir` and a non-zero exit."""
    corpus = workdir / "corpus"
    command = [sys.executable, "-m", module, f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048"]
    command += [f"-artifact_prefix={workdir}/", str(corpus)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=seconds + 300)


def crash_inputs(directory: Path) -> list[Path]:
    """The inputs a harness once crashed on, kept as regression cases."""
    return sorted(p for p in directory.glob("*") if p.is_file() and not p.name.startswith("."))
