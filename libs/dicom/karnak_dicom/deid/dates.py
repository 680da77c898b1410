"""Dates, times and ages as Karnak moves them: parsed leniently, shifted back, written in one fixed form.

Outputs: DA ``YYYYMMDD``, TM ``HHMMSS.FFFFFF``, DT ``YYYYMMDDHHMMSS.FFFFFF`` (a UTC offset in the input is
applied, giving UTC, and not written), AS ``nnnU``. A value that cannot be read gives None, and the caller
falls back to a dummy: an unreadable date is never passed through.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Final

__all__ = [
    "DATE_VRS",
    "dummy_value",
    "format_da",
    "format_dt",
    "format_tm",
    "parse_da",
    "parse_dt",
    "parse_tm",
    "patient_age",
    "shift_value",
    "truncate_value",
]

DATE_VRS: Final = frozenset({"AS", "DA", "DT", "TM"})

# Fixed dummies for values that cannot be shifted (the earliest dates DICOM software commonly accepts).
_DUMMIES: Final = {"DA": "19000101", "TM": "000000.000000", "DT": "19000101000000.000000", "AS": "000D"}

_DA: Final = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_TM: Final = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{0,6}))?)?)?")
_DT: Final = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?([+-]\d{4})?"
)
_AS: Final = re.compile(r"(\d{3})([DWMY])")
_AGE_UNIT_DAYS: Final = {"Y": 365, "M": 30, "W": 7, "D": 1}


def _microseconds(fraction: str | None) -> int:
    return int((fraction or "").ljust(6, "0")[:6] or "0")


def parse_da(text: str) -> date | None:
    """``YYYYMMDD`` (or the old ``YYYY.MM.DD``), surrounding spaces ignored."""
    match = _DA.fullmatch(text.strip())
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def parse_tm(text: str) -> time | None:
    """``HH[MM[SS[.F{0,6}]]]`` (colons between the parts accepted, as older software wrote them)."""
    match = _TM.fullmatch(text.strip())
    if match is None:
        return None
    try:
        return time(int(match[1]), int(match[2] or 0), int(match[3] or 0), _microseconds(match[4]))
    except ValueError:
        return None


def parse_dt(text: str) -> datetime | None:
    """``YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][+-ZZZZ]``; missing parts are the start of the period, an offset
    is applied so the result is UTC (naive)."""
    match = _DT.fullmatch(text.strip())
    if match is None:
        return None
    try:
        moment = datetime(
            int(match[1]),
            int(match[2] or 1),
            int(match[3] or 1),
            int(match[4] or 0),
            int(match[5] or 0),
            int(match[6] or 0),
            _microseconds(match[7]),
        )
        offset = match[8]
        if offset:
            sign = -1 if offset[0] == "-" else 1
            hours, minutes = int(offset[1:3]), int(offset[3:5])
            if hours > 14 or minutes > 59:
                return None
            moment -= sign * timedelta(hours=hours, minutes=minutes)
        return moment
    except (ValueError, OverflowError):
        return None


def format_da(value: date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def format_tm(value: time) -> str:
    return f"{value.hour:02d}{value.minute:02d}{value.second:02d}.{value.microsecond:06d}"


def format_dt(value: datetime) -> str:
    return format_da(value.date()) + format_tm(value.time())


def _shift_one(vr: str, text: str, days: int, seconds: int) -> str | None:
    try:
        if vr == "DA":
            day = parse_da(text)
            return None if day is None else format_da(day - timedelta(days=days))
        if vr == "TM":
            clock = parse_tm(text)
            if clock is None:
                return None
            # A time of day wraps around midnight; the date it belongs to is not touched.
            total = (clock.hour * 3600 + clock.minute * 60 + clock.second - seconds) % 86400
            return format_tm(time(total // 3600, total // 60 % 60, total % 60, clock.microsecond))
        if vr == "DT":
            moment = parse_dt(text)
            return None if moment is None else format_dt(moment - timedelta(days=days, seconds=seconds))
        if vr == "AS":
            match = _AS.fullmatch(text.strip())
            if match is None:
                return None
            unit = _AGE_UNIT_DAYS[match[2]]
            # Java's integer division truncates towards zero, Python's floors: keep Karnak's result.
            age = int(match[1]) + (abs(days) // unit) * (1 if days >= 0 else -1)
            return f"{age:03d}{match[2]}"
    except (OverflowError, ValueError):
        return None
    return None


def shift_value(vr: str, value: str, days: int, seconds: int) -> str | None:
    """``value`` (each of its values) moved back by ``days`` and ``seconds``: DA by the days, TM by the
    seconds, DT by both; an age grows by the days in its unit. None when any value cannot be read."""
    shifted = [_shift_one(vr, part, days, seconds) for part in value.split("\\")]
    if any(part is None for part in shifted):
        return None
    return "\\".join(part for part in shifted if part is not None)


def _truncate_one(vr: str, text: str, remove: str) -> str | None:
    keep_month = remove == "day"
    if vr == "DA":
        day = parse_da(text)
        if day is None:
            return None
        return format_da(day.replace(month=day.month if keep_month else 1, day=1))
    moment = parse_dt(text)
    if moment is None:
        return None
    return format_dt(moment.replace(month=moment.month if keep_month else 1, day=1))


def truncate_value(vr: str, value: str, remove: str) -> str | None:
    """A DA or DT with its day (``remove='day'``) or its month and day (``'month_day'``) set to the first;
    None when any value cannot be read."""
    truncated = [_truncate_one(vr, part, remove) for part in value.split("\\")]
    if any(part is None for part in truncated):
        return None
    return "\\".join(part for part in truncated if part is not None)


def dummy_value(vr: str) -> str:
    """A fixed, valid value for a date/time VR, for values that cannot be shifted."""
    return _DUMMIES[vr]


def patient_age(birth: date, at: date) -> str:
    """Karnak's age at a date: ``nnnY`` from two years, else ``nnnM`` from two months, else ``nnnD``."""
    years = at.year - birth.year - ((at.month, at.day) < (birth.month, birth.day))
    if years >= 2:
        return f"{years:03d}Y"
    months = (at.year - birth.year) * 12 + at.month - birth.month - (at.day < birth.day)
    if months >= 2:
        return f"{months:03d}M"
    return f"{(at - birth).days:03d}D"
