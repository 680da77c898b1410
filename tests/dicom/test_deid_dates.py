"""action.on.dates: shift, shift_range (known answers from hmac), shift_by_tag, date_format, the output forms,
and the fallback for values that cannot be read."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import Dataset, config
from pydicom.dataelem import DataElement

from karnak_dicom.deid import Deidentifier, load_profile
from karnak_dicom.deid.dates import parse_dt, parse_tm, patient_age, shift_value, truncate_value

SECRET = bytes.fromhex("a87ff679a2f3e71d9181a67b7542122c")
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "karnak-profiles"
PATIENT_ID = "PID-DATES-1"


def _fraction(value: str) -> float:
    return int.from_bytes(hmac.new(SECRET, value.encode("ascii"), hashlib.sha256).digest()[:6], "big") / 2**48


def _engine(option: str, arguments: str, tags: str = "", excluded: str = "", basic: bool = False) -> Deidentifier:
    text = (
        'name: "Dates"\nprofileElements:\n  - name: "Dates"\n    codename: "action.on.dates"\n'
        f'    option: "{option}"\n    arguments: {arguments}\n'
    )
    if tags:
        text += f"    tags: [{tags}]\n"
    if excluded:
        text += f"    excludedTags: [{excluded}]\n"
    if basic:
        text += '  - name: "Basic"\n    codename: "basic.dicom.profile"\n'
    return Deidentifier.for_project(load_profile(text), "study-x", SECRET, tag_morphing=True)


def _instance() -> Dataset:
    ds = Dataset()
    ds.PatientID = PATIENT_ID
    ds.StudyDate = "20240310"
    ds.StudyTime = "101010.25"
    ds.AcquisitionDateTime = "20240310101010.123456"
    ds.PatientAge = "054Y"
    ds.PatientBirthDate = "19700101"
    ds.SeriesDate = ""
    return ds


def test_shift_moves_dates_back_by_the_days_times_by_the_seconds_and_date_times_by_both() -> None:
    ds = _instance()
    _engine("shift", "{days: 10, seconds: 30}").apply(ds, None)

    assert ds.StudyDate == "20240229"  # through a leap day
    assert ds.StudyTime == "100940.250000"
    assert ds.AcquisitionDateTime == "20240229100940.123456"
    assert ds.PatientBirthDate == "19691222"
    assert ds.PatientAge == "054Y"  # 10 days is not a year
    assert ds.SeriesDate == ""  # empty: nothing to shift


def test_shift_range_takes_one_hash_fraction_of_the_patient_id_for_days_and_seconds() -> None:
    fraction = _fraction(PATIENT_ID)
    days = int(fraction * (100 - 50)) + 50
    seconds = int(fraction * (60 - 0))
    ds = _instance()
    _engine("shift_range", "{min_days: 50, max_days: 100, max_seconds: 60}").apply(ds, None)

    assert ds.StudyDate == (date(2024, 3, 10) - timedelta(days=days)).strftime("%Y%m%d")
    expected_time = (datetime(2000, 1, 1, 10, 10, 10, 250000) - timedelta(seconds=seconds)).strftime("%H%M%S.%f")
    assert ds.StudyTime == expected_time
    expected_dt = datetime(2024, 3, 10, 10, 10, 10, 123456) - timedelta(days=days, seconds=seconds)
    assert ds.AcquisitionDateTime == expected_dt.strftime("%Y%m%d%H%M%S.%f")


def test_shift_range_is_the_same_for_every_instance_of_a_patient_and_differs_between_patients() -> None:
    engine = _engine("shift_range", "{max_days: 365, max_seconds: 86400}")
    first, second, other = _instance(), _instance(), _instance()
    other.PatientID = "PID-DATES-2"
    for ds in (first, second, other):
        engine.apply(ds, None)
    assert first.StudyDate == second.StudyDate != other.StudyDate


def test_shift_by_tag_reads_days_and_seconds_from_the_instance_and_counts_the_rest_as_zero() -> None:
    engine = _engine("shift_by_tag", '{days_tag: "0009,1001", seconds_tag: PatientComments}')
    ds = _instance()
    ds.add_new(0x00091001, "IS", "3")
    ds.PatientComments = "not a number"
    engine.apply(ds, None)
    assert ds.StudyDate == "20240307" and ds.StudyTime == "101010.250000"

    absent = _instance()
    engine.apply(absent, None)
    assert absent.StudyDate == "20240310"


def test_date_format_sets_the_day_or_the_month_and_day_to_the_first() -> None:
    ds = _instance()
    _engine("date_format", "{remove: day}").apply(ds, None)
    assert ds.StudyDate == "20240301" and ds.AcquisitionDateTime == "20240301101010.123456"
    assert ds.StudyTime == "101010.25"  # a time has no day to remove: left to the next elements

    ds = _instance()
    _engine("date_format", "{remove: month_day}", basic=True).apply(ds, None)
    assert ds.StudyDate == "20240101" and ds.PatientBirthDate == "19700101"
    assert ds.StudyTime == ""  # the basic profile empties the time the date element left


def test_tags_restrict_the_dates_element_and_excluded_tags_are_left_to_the_next_elements() -> None:
    ds = _instance()
    _engine("shift", "{days: 1, seconds: 1}", tags='"(0008,002X)", "(0008,003X)"', excluded='"0008,0030"').apply(
        ds, None
    )
    assert ds.StudyDate == "20240309" and ds.StudyTime == "101010.25"
    assert ds.PatientBirthDate == "19700101"


def test_a_date_that_cannot_be_read_falls_back_to_a_dummy_value_never_to_itself() -> None:
    ds = _instance()
    for tag, vr, value in ((0x00080020, "DA", "2024-03-10"), (0x00080030, "TM", "25:99"), (0x00101010, "AS", "54Y")):
        ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    _engine("shift", "{days: 1, seconds: 1}").apply(ds, None)
    assert (ds.StudyDate, ds.StudyTime, ds.PatientAge) == ("19000101", "000000.000000", "000D")


def test_the_date_sample_profile_shifts_study_dates_by_range_and_patient_dates_by_ten_days() -> None:
    engine = Deidentifier.for_project(load_profile(SAMPLES / "profileDate.yml"), "study-x", SECRET)
    ds = _instance()
    ds.PatientAge = "054Y"
    engine.apply(ds, "PSN")

    days = int(_fraction(PATIENT_ID) * 50) + 50
    assert ds.StudyDate == (date(2024, 3, 10) - timedelta(days=days)).strftime("%Y%m%d")
    assert ds.StudyTime == ""  # (0008,0030) excluded from the range element: the basic profile empties it
    assert ds.PatientBirthDate == "19691222"  # (0010,XXXX) shifted by 10 days
    assert "PatientAge" not in ds  # (0010,1010) excluded: the basic profile removes it


@pytest.mark.parametrize(
    ("vr", "value", "days", "seconds", "expected"),
    [
        ("TM", "001000", 0, 900, "235500.000000"),  # wraps around midnight
        ("TM", "10", 0, 0, "100000.000000"),
        ("TM", "10:11:12.5", 0, 0, "101112.500000"),  # older software wrote colons
        ("DA", "2024.03.10", 1, 0, "20240309"),  # and dots
        ("DT", "2024", 1, 0, "20231231000000.000000"),
        ("DT", "20240310101010+0100", 0, 0, "20240310091010.000000"),  # an offset gives UTC
        ("AS", "010D", 5, 0, "015D"),
        ("AS", "003W", 14, 0, "005W"),
        ("AS", "011M", 60, 0, "013M"),
        ("AS", "045Y", 730, 0, "047Y"),
        ("DA", "20240310\\20240311", 1, 0, "20240309\\20240310"),
        ("DA", "20240310\\bad", 1, 0, None),
    ],
)
def test_values_are_shifted_in_one_output_form(vr: str, value: str, days: int, seconds: int, expected: str) -> None:
    assert shift_value(vr, value, days, seconds) == expected


def test_truncation_and_parsing_edge_cases() -> None:
    assert truncate_value("DT", "20240310101010", "month_day") == "20240101101010.000000"
    assert truncate_value("DA", "20240231", "day") is None
    assert parse_tm("240000") is None and parse_dt("20241301") is None


def test_the_patient_age_is_in_years_from_two_years_else_months_from_two_months_else_days() -> None:
    birth = date(2000, 2, 29)
    assert patient_age(birth, date(2002, 2, 28)) == "023M"
    assert patient_age(birth, date(2002, 3, 1)) == "002Y"
    assert patient_age(birth, date(2000, 4, 28)) == "059D"
    assert patient_age(birth, date(2000, 4, 29)) == "002M"
