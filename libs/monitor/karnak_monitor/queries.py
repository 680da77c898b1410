"""Reads the monitoring tables for the console: series, studies, a per-forward-node summary, CSV.

Filters are the API's query parameters (DESIGN.md section 15: named after the fields). The original
PatientID and AccessionNumber are shown, and may be searched, only by a caller allowed to see them
(operator, admin); anyone else sees the values as sent. Times are ISO 8601 with their offset (UTC), so a
browser shows them in its own zone (Karnak hard-codes CET).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import ColumnElement, Integer, and_, func, or_, select
from sqlalchemy.orm import Session

from karnak_shared.database import TransferInstanceRecord, TransferReasonRecord, TransferSeriesRecord

SessionFactory = Callable[[], Session]
Status = Literal["sent", "not-sent", "excluded", "error", "retrying"]
SORTABLE = ("last_seen", "first_seen", "forward_node", "destination", "study_uid", "series_uid", "modality", "errors")
SortKey = Literal[
    "last_seen", "-last_seen", "first_seen", "-first_seen", "forward_node", "-forward_node", "destination",
    "-destination", "study_uid", "-study_uid", "series_uid", "-series_uid", "modality", "-modality", "errors",
    "-errors",
]  # fmt: skip
_S = TransferSeriesRecord


class IdentifierFilterRefused(ValueError):
    """A viewer searched by an original patient identifier."""


class SeriesQuery(BaseModel):
    """The filters, page and order of a monitoring query."""

    model_config = ConfigDict(extra="forbid")

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    status: Status | None = None
    forward_node: str | None = None
    destination: str | None = None
    study_uid: str | None = Field(None, description="original or as sent")
    series_uid: str | None = Field(None, description="original or as sent")
    patient_id: str | None = Field(None, description="original; operator and admin only")
    accession_number: str | None = Field(None, description="original; operator and admin only")
    page: int = Field(1, ge=1)
    page_size: int = Field(50, ge=1, le=1000)
    sort: SortKey = "-last_seen"

    @model_validator(mode="after")
    def _range(self) -> SeriesQuery:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must not be after until")
        return self


class Reason(BaseModel):
    outcome: str
    reason: str
    count: int


class SeriesRow(BaseModel):
    """One series sent (or not) to one destination, as the monitoring page and the CSV show it."""

    forward_node: str
    destination: str
    status: Status
    study_uid: str
    series_uid: str
    study_uid_sent: str
    series_uid_sent: str
    patient_id: str
    accession_number: str
    modality: str
    study_description: str
    series_description: str
    study_date: str
    sop_classes: list[str]
    instances: int
    sent: int
    errors: int
    excluded: int
    retries: int
    duplicates: int
    retrying: int
    deidentified: bool
    tag_morphed: bool
    first_seen: dt.datetime
    last_seen: dt.datetime
    reasons: list[Reason] = []


class SeriesPage(BaseModel):
    total: int
    page: int
    page_size: int
    items: list[SeriesRow]


class StudyRow(BaseModel):
    """A study of one forward node and destination, its series summed."""

    forward_node: str
    destination: str
    status: Status
    study_uid: str
    study_uid_sent: str
    patient_id: str
    study_description: str
    study_date: str
    series: int
    instances: int
    sent: int
    errors: int
    excluded: int
    retries: int
    first_seen: dt.datetime
    last_seen: dt.datetime


class NodeSummary(BaseModel):
    """The dashboard of one forward node, from each transfer's own flags (not today's configuration)."""

    forward_node: str
    studies: int
    series: int
    instances: int
    sent: int
    errors: int
    excluded: int
    retries: int
    deidentified: int
    tag_morphed: int


def _status_clause(status: Status) -> ColumnElement[bool]:
    if status == "error":
        return _S.errors > 0
    if status == "retrying":
        return and_(_S.errors == 0, _S.retrying > 0)
    if status == "excluded":
        return and_(_S.errors == 0, _S.retrying == 0, _S.excluded > 0, _S.sent + _S.duplicates == 0)
    if status == "sent":
        return and_(_S.errors == 0, _S.retrying == 0, _S.sent + _S.duplicates > 0)
    return _S.sent + _S.duplicates < _S.instances  # not sent: at least one instance did not arrive


def status_of(errors: int, retrying: int, excluded: int, delivered: int) -> Status:
    """A series' badge: an error outranks a retry, a retry outranks an exclusion."""
    if errors:
        return "error"
    if retrying:
        return "retrying"
    if delivered:
        return "sent"
    return "excluded" if excluded else "not-sent"


def _where(query: SeriesQuery, may_see_originals: bool) -> list[ColumnElement[bool]]:
    if not may_see_originals and (query.patient_id or query.accession_number):
        raise IdentifierFilterRefused("patient_id and accession_number filters need the operator or admin role")
    clauses: list[ColumnElement[bool]] = []
    if query.since:
        clauses.append(_S.last_seen >= query.since)
    if query.until:
        clauses.append(_S.first_seen <= query.until)
    if query.status:
        clauses.append(_status_clause(query.status))
    if query.forward_node:
        clauses.append(_S.forward_node == query.forward_node)
    if query.destination:
        clauses.append(_S.destination == query.destination)
    if query.study_uid:
        clauses.append(or_(_S.study_uid == query.study_uid, _S.study_uid_sent == query.study_uid))
    if query.series_uid:
        clauses.append(or_(_S.series_uid == query.series_uid, _S.series_uid_sent == query.series_uid))
    if query.patient_id:
        clauses.append(_S.patient_id == query.patient_id)
    if query.accession_number:
        clauses.append(_S.accession_number == query.accession_number)
    return clauses


def _order(sort: str) -> Sequence[Any]:
    column = getattr(_S, sort.lstrip("-"))
    primary = column.desc() if sort.startswith("-") else column.asc()
    return (primary, _S.id.asc())  # a stable order, so pages never repeat or skip a row


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _row(record: TransferSeriesRecord, reasons: list[Reason], may_see_originals: bool) -> SeriesRow:
    return SeriesRow(
        forward_node=record.forward_node,
        destination=record.destination,
        status=status_of(record.errors, record.retrying, record.excluded, record.sent + record.duplicates),
        study_uid=record.study_uid,
        series_uid=record.series_uid,
        study_uid_sent=record.study_uid_sent,
        series_uid_sent=record.series_uid_sent,
        patient_id=(record.patient_id or "") if may_see_originals else record.patient_id_sent,
        accession_number=(record.accession_number or "") if may_see_originals else record.accession_number_sent,
        modality=record.modality,
        study_description=record.study_description,
        series_description=record.series_description,
        study_date=record.study_date,
        sop_classes=[c for c in record.sop_classes.split(",") if c],
        instances=record.instances,
        sent=record.sent,
        errors=record.errors,
        excluded=record.excluded,
        retries=record.retries,
        duplicates=record.duplicates,
        retrying=record.retrying,
        deidentified=record.deidentified,
        tag_morphed=record.tag_morphed,
        first_seen=_utc(record.first_seen),
        last_seen=_utc(record.last_seen),
        reasons=reasons,
    )


def list_series(sessions: SessionFactory, query: SeriesQuery, may_see_originals: bool) -> SeriesPage:
    """One page of series rows matching `query`, with their reasons."""
    clauses = _where(query, may_see_originals)
    with sessions() as session:
        total = session.scalar(select(func.count()).select_from(_S).where(*clauses)) or 0
        records = list(
            session.scalars(
                select(_S)
                .where(*clauses)
                .order_by(*_order(query.sort))
                .offset((query.page - 1) * query.page_size)
                .limit(query.page_size)
            )
        )
        reasons: dict[int, list[Reason]] = {r.id: [] for r in records}
        if records:
            for item in session.scalars(
                select(TransferReasonRecord)
                .where(TransferReasonRecord.series_id.in_(list(reasons)))
                .order_by(TransferReasonRecord.series_id, TransferReasonRecord.outcome, TransferReasonRecord.reason)
            ):
                reasons[item.series_id].append(Reason(outcome=item.outcome, reason=item.reason, count=item.count))
        items = [_row(r, reasons[r.id], may_see_originals) for r in records]
    return SeriesPage(total=total, page=query.page, page_size=query.page_size, items=items)


def list_studies(sessions: SessionFactory, query: SeriesQuery, may_see_originals: bool) -> list[StudyRow]:
    """The studies among the series matching `query` (at most `page_size`, most recent first)."""
    clauses = _where(query, may_see_originals)
    patient = func.max(_S.patient_id if may_see_originals else _S.patient_id_sent)
    statement = (
        select(
            _S.forward_node,
            _S.destination,
            _S.study_uid,
            func.max(_S.study_uid_sent),
            patient,
            func.max(_S.study_description),
            func.max(_S.study_date),
            func.count(),
            func.sum(_S.instances),
            func.sum(_S.sent),
            func.sum(_S.errors),
            func.sum(_S.excluded),
            func.sum(_S.retries),
            func.sum(_S.retrying),
            func.sum(_S.duplicates),
            func.min(_S.first_seen),
            func.max(_S.last_seen),
        )
        .where(*clauses)
        .group_by(_S.forward_node, _S.destination, _S.study_uid)
        .order_by(func.max(_S.last_seen).desc(), _S.study_uid)
        .offset((query.page - 1) * query.page_size)
        .limit(query.page_size)
    )
    studies = []
    with sessions() as session:
        for row in session.execute(statement):
            (node, destination, study, sent_uid, patient_id, description, date, series, instances) = row[:9]
            sent, errors, excluded, retries, retrying, duplicates, first, last = row[9:]
            studies.append(
                StudyRow(
                    forward_node=node,
                    destination=destination,
                    status=status_of(errors, retrying, excluded, sent + duplicates),
                    study_uid=study,
                    study_uid_sent=sent_uid or "",
                    patient_id=patient_id or "",
                    study_description=description or "",
                    study_date=date or "",
                    series=series,
                    instances=instances,
                    sent=sent,
                    errors=errors,
                    excluded=excluded,
                    retries=retries,
                    first_seen=_utc(first),
                    last_seen=_utc(last),
                )
            )
    return studies


def summary(sessions: SessionFactory, query: SeriesQuery, may_see_originals: bool) -> list[NodeSummary]:
    """The dashboard: per forward node, over the series matching `query`."""
    clauses = _where(query, may_see_originals)
    deidentified = func.sum(_S.instances * _S.deidentified.cast(Integer))
    tag_morphed = func.sum(_S.instances * _S.tag_morphed.cast(Integer))
    statement = (
        select(
            _S.forward_node,
            func.count(func.distinct(_S.study_uid)),
            func.count(),
            func.sum(_S.instances),
            func.sum(_S.sent),
            func.sum(_S.errors),
            func.sum(_S.excluded),
            func.sum(_S.retries),
            deidentified,
            tag_morphed,
        )
        .where(*clauses)
        .group_by(_S.forward_node)
        .order_by(_S.forward_node)
    )
    with sessions() as session:
        return [
            NodeSummary(
                forward_node=node,
                studies=studies,
                series=series,
                instances=instances or 0,
                sent=sent or 0,
                errors=errors or 0,
                excluded=excluded or 0,
                retries=retries or 0,
                deidentified=deid or 0,
                tag_morphed=morphed or 0,
            )
            for node, studies, series, instances, sent, errors, excluded, retries, deid, morphed in session.execute(
                statement
            )
        ]


CSV_COLUMNS = (
    "forward_node", "destination", "status", "study_uid", "series_uid", "study_uid_sent", "series_uid_sent",
    "patient_id", "accession_number", "modality", "study_description", "series_description", "study_date",
    "instances", "sent", "errors", "excluded", "retries", "duplicates", "deidentified", "tag_morphed",
    "first_seen", "last_seen", "reasons",
)  # fmt: skip


def csv_text(rows: Iterable[SeriesRow], separator: str = ",") -> str:
    """The rows as CSV with a header line; reasons as `outcome: reason (count)` joined by ` | `."""
    if len(separator) != 1 or separator in '"\r\n':
        raise ValueError("separator must be one character other than a quote or a line break")
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = row.model_dump()
        values["first_seen"] = row.first_seen.isoformat()
        values["last_seen"] = row.last_seen.isoformat()
        values["reasons"] = " | ".join(f"{r.outcome}: {r.reason} ({r.count})" for r in row.reasons)
        writer.writerow([values[c] for c in CSV_COLUMNS])
    return out.getvalue()


def all_series(sessions: SessionFactory, query: SeriesQuery, may_see_originals: bool) -> list[SeriesRow]:
    """Every row matching `query`, page after page (the CSV export of the current filter)."""
    rows: list[SeriesRow] = []
    page = query.model_copy(update={"page": 1, "page_size": 1000})
    while True:
        found = list_series(sessions, page, may_see_originals)
        rows += found.items
        if len(rows) >= found.total or not found.items:
            return rows
        page = page.model_copy(update={"page": page.page + 1})


def instance_uids(sessions: SessionFactory, forward_node: str, destination: str, series_uid: str) -> set[str] | None:
    """The SOP instance UIDs (as sent) of one series row, None when there is no such row.

    They are what a sender's parked message names (`karnak-sop-instance-uid`): the link from a failing
    series to its messages in the dead-letter queue.
    """
    with sessions() as session:
        row_id = session.scalar(
            select(_S.id).where(
                _S.forward_node == forward_node, _S.destination == destination, _S.series_uid == series_uid
            )
        )
        if row_id is None:
            return None
        return set(
            session.scalars(
                select(TransferInstanceRecord.sop_instance_uid).where(TransferInstanceRecord.series_id == row_id)
            )
        )
