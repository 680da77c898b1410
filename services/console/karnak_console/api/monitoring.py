"""Transfer monitoring (DESIGN.md section 16): what happened to every series, per forward node and destination.

Every role may read it (`status`); the original PatientID and AccessionNumber are shown, and may be
searched, only by a role allowed re-identifying data (`pseudonyms`: operator, admin). Anyone else sees
the values as sent, and a search by an original identifier is refused (403), never silently ignored.
Times are ISO 8601 with their offset (UTC); the pages show them in the browser's zone. The CSV export
of a filter has exactly the rows the API lists for it, in the same order.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import ValidationError

from karnak_console.api.common import ConsoleDep, Operator, StatusReader
from karnak_console.api.operations import DeadLetter, _dead_letters
from karnak_console.context import Console
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.roles import Permission, allows
from karnak_console.security import Caller
from karnak_monitor.queries import (
    IdentifierFilterRefused,
    NodeSummary,
    SeriesPage,
    SeriesQuery,
    SortKey,
    Status,
    StudyRow,
    all_series,
    csv_text,
    instance_uids,
    list_series,
    list_studies,
    summary,
)

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])

UID = Annotated[str | None, Query(max_length=64, description="original or as sent")]


def may_see_originals(caller: Caller) -> bool:
    """Whether the caller sees (and may search) the original patient identifiers."""
    return allows(caller.principal.role, Permission.PSEUDONYMS)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # A time without an offset is taken as UTC (what the API answers in).
    if value is None:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def series_query(
    since: Annotated[dt.datetime | None, Query(description="last seen at or after (ISO 8601)")] = None,
    until: Annotated[dt.datetime | None, Query(description="first seen at or before (ISO 8601)")] = None,
    status: Annotated[Status | None, Query(description="sent, not-sent, excluded, error or retrying")] = None,
    forward_node: Annotated[str | None, Query(max_length=16)] = None,
    destination: Annotated[str | None, Query(max_length=64)] = None,
    study_uid: UID = None,
    series_uid: UID = None,
    patient_id: Annotated[
        str | None, Query(max_length=64, description="original PatientID; operator and admin only")
    ] = None,
    accession_number: Annotated[
        str | None, Query(max_length=64, description="original AccessionNumber; operator and admin only")
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 50,
    sort: Annotated[SortKey, Query(description="a column, `-` first for descending")] = "-last_seen",
) -> SeriesQuery:
    try:
        return SeriesQuery(
            since=_utc(since),
            until=_utc(until),
            status=status,
            forward_node=forward_node or None,
            destination=destination or None,
            study_uid=study_uid or None,
            series_uid=series_uid or None,
            patient_id=patient_id or None,
            accession_number=accession_number or None,
            page=page,
            page_size=page_size,
            sort=sort,
        )
    except ValidationError as exc:
        problems = [FieldProblem(field="since", message=e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ApiProblem(422, "the time range is empty", problems) from None


Filter = Annotated[SeriesQuery, Depends(series_query)]


def _sessions(console: Console) -> Any:
    return console.accounts.sessions


def _refused(exc: IdentifierFilterRefused) -> ApiProblem:
    return ApiProblem(403, str(exc), [FieldProblem(field="patient_id", message="needs the operator or admin role")])


@router.get("/series", summary="Series rows per forward node and destination, with their reasons")
def series(caller: StatusReader, console: ConsoleDep, query: Filter) -> SeriesPage:
    try:
        return list_series(_sessions(console), query, may_see_originals(caller))
    except IdentifierFilterRefused as exc:
        raise _refused(exc) from None


@router.get("/studies", summary="Studies among the matching series, their series summed (most recent first)")
def studies(caller: StatusReader, console: ConsoleDep, query: Filter) -> list[StudyRow]:
    try:
        return list_studies(_sessions(console), query, may_see_originals(caller))
    except IdentifierFilterRefused as exc:
        raise _refused(exc) from None


@router.get("/summary", summary="The dashboard: per forward node, from each transfer's own flags")
def dashboard(caller: StatusReader, console: ConsoleDep, query: Filter) -> list[NodeSummary]:
    try:
        return summary(_sessions(console), query, may_see_originals(caller))
    except IdentifierFilterRefused as exc:
        raise _refused(exc) from None


@router.get(
    "/export.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Every series row of the filter as CSV (the page and page size are ignored)",
)
def export_csv(
    caller: StatusReader,
    console: ConsoleDep,
    query: Filter,
    separator: Annotated[str, Query(min_length=1, max_length=1, description="one character; not a quote")] = ",",
) -> Response:
    try:
        rows = all_series(_sessions(console), query, may_see_originals(caller))
        text = csv_text(rows, separator)
    except IdentifierFilterRefused as exc:
        raise _refused(exc) from None
    except ValueError as exc:
        raise ApiProblem(422, str(exc), [FieldProblem(field="separator", message=str(exc))]) from None
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="monitoring.csv"'},
    )


@router.get(
    "/series/parked",
    summary="The parked messages of one series row (replay them with POST /api/v1/dead-letters:replay)",
)
def parked(
    caller: Operator,
    console: ConsoleDep,
    forward_node: Annotated[str, Query(max_length=16)],
    destination: Annotated[str, Query(max_length=64)],
    series_uid: Annotated[str, Query(max_length=64, description="the original series UID of the row")],
) -> list[DeadLetter]:
    uids = instance_uids(_sessions(console), forward_node, destination, series_uid)
    if uids is None:
        raise ApiProblem(404, "no such series row (forward node, destination, original series UID)")
    if not uids:
        return []
    with _dead_letters(console) as dead:
        entries = dead.list(limit=10000)
    return [DeadLetter(**e.as_dict()) for e in entries if e.destination == destination and e.sop_instance_uid in uids]
