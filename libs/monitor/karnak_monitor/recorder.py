"""Turns transfer events into monitoring rows, counting each event once.

Counts are of SOP instances, not of events: each instance of a series row keeps its last outcome, so an
instance retried twice and then sent counts one `sent` and two `retries`, never an error; a STOW 409 is a
`duplicate` (already stored there), never both sent and failed. Events may arrive out of order across
senders and replicas: an outcome older than the one an instance already has does not replace it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from karnak_shared.database import (
    MonitorEventRecord,
    TransferInstanceRecord,
    TransferReasonRecord,
    TransferSeriesRecord,
)
from karnak_shared.envelope import TransferEvent

SessionFactory = Callable[[], Session]

# The counter of a series row that an instance's last outcome adds to.
_COUNTER = {
    "sent": "sent",
    "failed": "errors",
    "rejected": "excluded",
    "duplicate": "duplicates",
    "retried": "retrying",
}
_FINAL = ("sent", "failed", "rejected", "duplicate")
_REASON_LENGTH = 512


def _clip(text: str, length: int) -> str:
    return text[:length]


class SeriesRecorder:
    """Records transfer events into the monitoring tables."""

    def __init__(self, sessions: SessionFactory, original_identifiers: bool = True) -> None:
        self._sessions = sessions
        self._original_identifiers = original_identifiers

    def record(self, event: TransferEvent) -> bool:
        """Count `event` once; False when it was counted before (a redelivery), so nothing changed."""
        for attempt in range(3):
            try:
                with self._sessions() as session, session.begin():
                    if session.get(MonitorEventRecord, event.event_id) is not None:
                        return False
                    session.add(MonitorEventRecord(event_id=event.event_id, seen_at=_now()))
                    self._apply(session, event)
                return True
            except IntegrityError:
                # Another monitor replica created the same series row or counted the same event at the same
                # moment: the next attempt sees its row (or its event id) and goes on from there.
                if attempt == 2:
                    raise
        return False

    def _apply(self, session: Session, event: TransferEvent) -> None:
        series = self._series_row(session, event)
        instance = session.get(TransferInstanceRecord, (series.id, event.sop_instance_uid))
        if event.kind == "retried":
            series.retries += 1
        if instance is None:
            session.add(
                TransferInstanceRecord(
                    series_id=series.id, sop_instance_uid=event.sop_instance_uid, outcome=event.kind, at=event.at
                )
            )
            series.instances += 1
            _bump(series, event.kind, +1)
        elif _replaces(instance, event):
            _bump(series, instance.outcome, -1)
            _bump(series, event.kind, +1)
            instance.outcome, instance.at = event.kind, event.at
        if event.reason:
            key = (series.id, event.kind, _clip(event.reason, _REASON_LENGTH))
            reason = session.get(TransferReasonRecord, key)
            if reason is None:
                session.add(TransferReasonRecord(series_id=key[0], outcome=key[1], reason=key[2], count=1))
            else:
                reason.count += 1

    def _series_row(self, session: Session, event: TransferEvent) -> TransferSeriesRecord:
        origin = event.origin
        series_uid = origin.series_instance_uid or event.series_instance_uid or "-"
        at = dt.datetime.fromtimestamp(event.at, dt.UTC)
        row = session.scalars(
            select(TransferSeriesRecord)
            .where(
                TransferSeriesRecord.forward_node == event.forward_node,
                TransferSeriesRecord.destination == event.destination,
                TransferSeriesRecord.series_uid == series_uid,
            )
            # Locked until the commit: two monitor workers (or replicas) updating one series row would
            # otherwise both add to the counts they read, and one addition would be lost.
            .with_for_update()
        ).one_or_none()
        if row is None:
            row = TransferSeriesRecord(
                forward_node=event.forward_node,
                destination=event.destination,
                study_uid=origin.study_instance_uid or event.study_instance_uid or "-",
                series_uid=series_uid,
                study_uid_sent="",
                series_uid_sent="",
                patient_id_sent="",
                accession_number_sent="",
                modality="",
                study_description="",
                series_description="",
                study_date="",
                sop_classes="",
                instances=0,
                sent=0,
                errors=0,
                excluded=0,
                retries=0,
                duplicates=0,
                retrying=0,
                deidentified=False,
                tag_morphed=False,
                first_seen=at,
                last_seen=at,
            )
            session.add(row)
            session.flush()  # its id, for the instance and reason rows
        row.first_seen = min(_aware(row.first_seen), at)
        row.last_seen = max(_aware(row.last_seen), at)
        # A rejected instance was never sent: its UIDs are the original ones, not worth showing as sent.
        if event.kind != "rejected":
            row.study_uid_sent = event.study_instance_uid or row.study_uid_sent
            row.series_uid_sent = event.series_instance_uid or row.series_uid_sent
        row.modality = _clip(origin.modality, 16) or row.modality
        row.study_description = _clip(origin.study_description, 64) or row.study_description
        row.series_description = _clip(origin.series_description, 64) or row.series_description
        row.study_date = _clip(origin.study_date, 8) or row.study_date
        row.patient_id_sent = _clip(origin.patient_id_sent, 64) or row.patient_id_sent
        row.accession_number_sent = _clip(origin.accession_number_sent, 64) or row.accession_number_sent
        if self._original_identifiers:
            row.patient_id = _clip(origin.patient_id, 64) if origin.patient_id is not None else row.patient_id
            if origin.accession_number is not None:
                row.accession_number = _clip(origin.accession_number, 64)
        row.deidentified = row.deidentified or origin.deidentified
        row.tag_morphed = row.tag_morphed or origin.tag_morphed
        classes = set(filter(None, row.sop_classes.split(",")))
        if event.sop_class_uid not in classes:
            row.sop_classes = ",".join(sorted(classes | {event.sop_class_uid}))
        return row


def _replaces(instance: TransferInstanceRecord, event: TransferEvent) -> bool:
    """Whether `event` is newer news about the instance than what its row says."""
    if event.kind == "retried":
        # A retry after a final outcome is a late event of an earlier attempt; one before it is news.
        return instance.outcome == "retried" and event.at >= instance.at
    if instance.outcome in _FINAL and event.at < instance.at:
        return False
    return True


def _bump(series: TransferSeriesRecord, outcome: str, by: int) -> None:
    counter = _COUNTER[outcome]
    setattr(series, counter, getattr(series, counter) + by)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes for timezone-aware columns; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
