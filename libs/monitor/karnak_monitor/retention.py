"""Deletes monitoring rows older than the retention (`monitoring.retention_days`, default 30).

A series row goes when its last event is older than the cut-off (its instances and reasons with it); the
ids of counted events go after the same time, since no redelivery comes that late.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Result, delete, select
from sqlalchemy.orm import Session

from karnak_shared.database import (
    MonitorEventRecord,
    TransferInstanceRecord,
    TransferReasonRecord,
    TransferSeriesRecord,
)

SessionFactory = Callable[[], Session]


@dataclass(frozen=True)
class Purged:
    series: int
    events: int


def purge(sessions: SessionFactory, older_than: dt.timedelta, now: dt.datetime | None = None) -> Purged:
    """Delete what was last seen before now - `older_than`; returns how many series and event ids went."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - older_than
    old_ids = select(TransferSeriesRecord.id).where(TransferSeriesRecord.last_seen < cutoff)
    with sessions() as session, session.begin():
        # Children first: SQLite enforces ON DELETE CASCADE only with its foreign_keys pragma.
        session.execute(delete(TransferInstanceRecord).where(TransferInstanceRecord.series_id.in_(old_ids)))
        session.execute(delete(TransferReasonRecord).where(TransferReasonRecord.series_id.in_(old_ids)))
        series = session.execute(delete(TransferSeriesRecord).where(TransferSeriesRecord.last_seen < cutoff))
        events = session.execute(delete(MonitorEventRecord).where(MonitorEventRecord.seen_at < cutoff))
    return Purged(series=_count(series), events=_count(events))


def _count(result: Result[Any]) -> int:
    # A DELETE's result is a CursorResult, which knows how many rows it deleted.
    return int(getattr(result, "rowcount", 0) or 0)
