"""Coverage-guided fuzzing (atheris) of the instance reader, bounded in time; crashes found are replayed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dicom.fuzz_instance_reader import one_input
from tests.support.fuzzing import crash_inputs, run_harness

CRASHES = Path(__file__).parent / "crashes" / "instance_reader"


@pytest.mark.fuzz
def test_the_instance_reader_survives_a_minute_of_coverage_guided_fuzzing(tmp_path: Path) -> None:
    result = run_harness("tests.dicom.fuzz_instance_reader", tmp_path, seconds=60)
    found = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert result.returncode == 0 and not found, f"{found}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("case", crash_inputs(CRASHES), ids=lambda p: p.name)
def test_an_input_that_once_crashed_the_reader_is_now_refused_with_a_reason(case: Path) -> None:
    one_input(case.read_bytes())
