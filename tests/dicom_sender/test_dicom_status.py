"""How the dicom-sender reads C-STORE response statuses (DESIGN.md section 8)."""

from __future__ import annotations

import pytest

from karnak_dicom_sender.status import Outcome, classify, describe


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, Outcome.SUCCESS),
        (0xB000, Outcome.WARNING),
        (0xB007, Outcome.WARNING),
        (0xB006, Outcome.WARNING),
        (0x0107, Outcome.WARNING),
        (0x0116, Outcome.WARNING),
        (0xA700, Outcome.TRANSIENT),
        (0xA7FF, Outcome.TRANSIENT),
        (0xA710, Outcome.TRANSIENT),
        (0x0122, Outcome.PERMANENT),
        (0xA900, Outcome.PERMANENT),
        (0xA9FF, Outcome.PERMANENT),
        (0xC000, Outcome.PERMANENT),
        (0xC123, Outcome.PERMANENT),
        (0x0110, Outcome.PERMANENT),
        (0x0124, Outcome.PERMANENT),
    ],
    ids=lambda value: f"0x{value:04X}" if isinstance(value, int) else value.value,
)
def test_status_is_classified_as_designed(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_only_out_of_resources_is_worth_retrying() -> None:
    retried = [status for status in range(0x10000) if classify(status) is Outcome.TRANSIENT]

    assert retried == list(range(0xA700, 0xA800))


def test_only_zero_is_plain_success() -> None:
    assert [status for status in range(0x10000) if classify(status) is Outcome.SUCCESS] == [0x0000]


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (0x0000, "0x0000 (Success)"),
        (0x0122, "0x0122 (SOP Class not supported)"),
        (0xA700, "0xA700 (Out of resources)"),
        (0xA7FF, "0xA7FF (Out of resources)"),
        (0xA900, "0xA900 (Data set does not match SOP Class)"),
        (0xA9FF, "0xA9FF (Data set does not match SOP Class)"),
        (0xC000, "0xC000 (Cannot understand)"),
        (0xC123, "0xC123 (Cannot understand)"),
        (0xB007, "0xB007 (Data set does not match SOP Class (warning))"),
        (0x0110, "0x0110 (Processing failure)"),
        (0xFE00, "0xFE00 (Failure)"),
    ],
)
def test_describe_gives_the_hex_code_and_a_name(status: int, text: str) -> None:
    assert describe(status) == text


@pytest.mark.parametrize("status", [0x0000, 0x0001, 0xB000, 0xA7FF, 0xC123, 0xFFFF])
def test_describe_always_starts_with_the_four_digit_upper_case_code(status: int) -> None:
    assert describe(status).startswith(f"0x{status:04X} (")
