"""The Monitoring pages (DESIGN.md section 16; Karnak's page in docs/reference/karnak-console.md 2.6).

Server-rendered with Jinja2; the activity tree and the dashboard refresh themselves (htmx polling of
their partials, every 10 s). Each view reads the same queries as the API (`karnak_monitor.queries`), with
the same filters and the same rule for original identifiers, so the page, the API and the CSV agree.
From a failing series, operators open its parked messages and replay them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError

from karnak_console.api.common import ConsoleDep
from karnak_console.api.monitoring import may_see_originals
from karnak_console.api.operations import _dead_letters
from karnak_console.pages import PageGuard, render, see_other
from karnak_console.roles import Permission, allows
from karnak_console.security import Caller
from karnak_monitor.queries import (
    IdentifierFilterRefused,
    SeriesQuery,
    SeriesRow,
    instance_uids,
    list_series,
    summary,
)

router = APIRouter(include_in_schema=False)

# Every role reads the monitoring; the parked messages and their replay are for operators and admins.
MonitoringReader = Annotated[Caller, Depends(PageGuard(Permission.STATUS))]
MonitoringOperator = Annotated[Caller, Depends(PageGuard(Permission.OPERATE))]

# Karnak's range presets (the default is the last 24 hours); "custom" takes the From and To fields.
RANGES = {
    "5m": ("Last 5 minutes", dt.timedelta(minutes=5)),
    "15m": ("Last 15 minutes", dt.timedelta(minutes=15)),
    "1h": ("Last hour", dt.timedelta(hours=1)),
    "24h": ("Last 24 hours", dt.timedelta(hours=24)),
    "today": ("Today", None),
    "7d": ("Last 7 days", dt.timedelta(days=7)),
    "15d": ("Last 15 days", dt.timedelta(days=15)),
    "all": ("All", None),
    "custom": ("Custom", None),
}
STATUSES = {"": "All", "sent": "Sent", "not-sent": "Not sent", "excluded": "Excluded", "error": "Error",
            "retrying": "Retrying"}  # fmt: skip
TEXT_FILTERS = ("forward_node", "destination", "study_uid", "series_uid", "patient_id", "accession_number")
TREE_ROWS = 1000  # series shown in the tree; the CSV export has every row


@dataclass
class Filters:
    """The filter bar as submitted (strings, so the form shows them back) and the query it makes."""

    values: dict[str, str]
    query: SeriesQuery | None = None
    problem: str | None = None

    def encoded(self, **extra: str) -> str:
        return urlencode({k: v for k, v in {**self.values, **extra}.items() if v})

    def exported(self) -> dict[str, str]:
        """The query as the CSV export's parameters (the preset resolved to its time range)."""
        if self.query is None:
            return {}
        fields = self.query.model_dump(exclude={"page", "page_size", "sort"})
        return {k: v.isoformat() if isinstance(v, dt.datetime) else str(v) for k, v in fields.items() if v}


@dataclass
class SeriesNode:
    row: SeriesRow
    parked_link: str = ""


@dataclass
class StudyNode:
    uid: str
    description: str
    uid_sent: str
    patient_id: str
    series: list[SeriesNode] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(s.row, name)) for s in self.series)

    @property
    def status(self) -> str:
        return _worst(s.row.status for s in self.series)


@dataclass
class DestinationNode:
    forward_node: str
    destination: str
    studies: dict[str, StudyNode] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return sum(study.total(name) for study in self.studies.values())

    @property
    def series_count(self) -> int:
        return sum(len(study.series) for study in self.studies.values())

    @property
    def status(self) -> str:
        return _worst(study.status for study in self.studies.values())


_RANK = ["error", "retrying", "excluded", "not-sent", "sent"]


def _worst(statuses: Any) -> str:
    found = list(statuses)
    return min(found, key=_RANK.index) if found else "sent"


def _utc_or_none(text: str) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text)
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def read_filters(params: Mapping[str, str], originals: bool, now: dt.datetime | None = None) -> Filters:
    """The filter bar's values and the query they ask for; a bad value is named, never ignored."""
    values = {name: params.get(name, "").strip() for name in ("range", "since", "until", "status", *TEXT_FILTERS)}
    values["range"] = values["range"] if values["range"] in RANGES else "24h"
    if not originals:
        values["patient_id"] = values["accession_number"] = ""
    now = now or dt.datetime.now(dt.UTC)
    try:
        since, until = _utc_or_none(values["since"]), _utc_or_none(values["until"])
    except ValueError:
        return Filters(values, problem="From and To must be dates and times (ISO 8601)")
    preset = values["range"]
    if preset == "today":
        since, until = now.replace(hour=0, minute=0, second=0, microsecond=0), None
    elif preset == "all":
        since = until = None
    elif preset != "custom":
        delta = RANGES[preset][1]
        assert delta is not None
        since, until = now - delta, None
    try:
        query = SeriesQuery(
            since=since,
            until=until,
            status=values["status"] or None,
            page_size=TREE_ROWS,
            sort="-errors",
            **{name: values[name] or None for name in TEXT_FILTERS},
        )
    except ValidationError as exc:
        return Filters(values, problem="; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
    return Filters(values, query)


def build_tree(rows: list[SeriesRow], operator: bool) -> list[DestinationNode]:
    """Destination -> study -> series, each level's worst status first, then by name (as Karnak sorts)."""
    destinations: dict[tuple[str, str], DestinationNode] = {}
    for row in rows:
        node = destinations.setdefault(
            (row.forward_node, row.destination), DestinationNode(row.forward_node, row.destination)
        )
        study = node.studies.setdefault(
            row.study_uid, StudyNode(row.study_uid, row.study_description, row.study_uid_sent, row.patient_id)
        )
        link = ""
        if operator and row.status in ("error", "retrying"):
            link = "/monitoring/parked?" + urlencode(
                {"forward_node": row.forward_node, "destination": row.destination, "series_uid": row.series_uid}
            )
        study.series.append(SeriesNode(row, link))
    ordered = sorted(destinations.values(), key=lambda d: (_RANK.index(d.status), d.forward_node, d.destination))
    for node in ordered:
        node.studies = dict(sorted(node.studies.items(), key=lambda item: (_RANK.index(item[1].status), item[0])))
    return ordered


@router.get("/monitoring")
async def monitoring_page(request: Request, caller: MonitoringReader, console: ConsoleDep) -> Response:
    originals = may_see_originals(caller)
    filters = read_filters(request.query_params, originals)
    view = "dashboard" if request.query_params.get("view") == "dashboard" else "activity"
    return render(
        request,
        "monitoring/page.html",
        caller,
        filters=filters,
        view=view,
        ranges=RANGES,
        statuses=STATUSES,
        originals=originals,
        **_content(console, filters, caller, view),
    )


@router.get("/monitoring/{view}.part")
async def monitoring_part(view: str, request: Request, caller: MonitoringReader, console: ConsoleDep) -> Response:
    """The tree or the dashboard alone, for the page's polling."""
    if view not in ("activity", "dashboard"):
        return Response(status_code=404)
    filters = read_filters(request.query_params, may_see_originals(caller))
    return render(
        request, f"monitoring/{view}.html", caller, filters=filters, **_content(console, filters, caller, view)
    )


def _content(console: Any, filters: Filters, caller: Caller, view: str) -> dict[str, Any]:
    if filters.query is None:
        return {"tree": [], "nodes": [], "total": 0, "shown": 0, "refreshed": _now_text()}
    sessions = console.accounts.sessions
    originals = may_see_originals(caller)
    try:
        if view == "dashboard":
            nodes = summary(sessions, filters.query, originals)
            return {"nodes": nodes, "totals": _sum_nodes(nodes), "refreshed": _now_text()}
        page = list_series(sessions, filters.query, originals)
    except IdentifierFilterRefused as exc:
        filters.problem = str(exc)
        return {"tree": [], "nodes": [], "total": 0, "shown": 0, "refreshed": _now_text()}
    operator = allows(caller.principal.role, Permission.OPERATE)
    return {"tree": build_tree(page.items, operator), "total": page.total, "shown": len(page.items),
            "refreshed": _now_text()}  # fmt: skip


def _sum_nodes(nodes: list[Any]) -> dict[str, int]:
    names = ("studies", "series", "instances", "sent", "errors", "excluded", "retries", "deidentified", "tag_morphed")
    return {name: sum(int(getattr(n, name)) for n in nodes) for name in names}


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@router.get("/monitoring/parked")
async def parked_page(request: Request, caller: MonitoringOperator, console: ConsoleDep) -> Response:
    """The parked messages of one failing series, with a replay button (operators and admins)."""
    params = request.query_params
    key = {name: params.get(name, "") for name in ("forward_node", "destination", "series_uid")}
    uids = instance_uids(console.accounts.sessions, key["forward_node"], key["destination"], key["series_uid"])
    messages: list[Any] = []
    problem = None
    if uids is None:
        problem = "No such series row (forward node, destination, original series UID)."
    elif uids:
        try:
            with _dead_letters(console) as dead:
                messages = [
                    m
                    for m in dead.list(limit=10000)
                    if m.destination == key["destination"] and m.sop_instance_uid in uids
                ]
        except Exception as exc:  # noqa: BLE001 - ApiProblem (503) or a broker error: shown, not a crash
            problem = str(getattr(exc, "detail", exc))
    return render(
        request,
        "monitoring/parked.html",
        caller,
        key=key,
        messages=messages,
        problem=problem,
        replayed=params.get("replayed"),
    )


@router.post("/monitoring/parked")
async def replay_parked(request: Request, caller: MonitoringOperator, console: ConsoleDep) -> Response:
    """Replay the selected parked messages of a series (the guard checks the form's CSRF token)."""
    form = await request.form()
    ids = {str(v) for v in form.getlist("instance_id") if isinstance(v, str)}
    key = {name: str(form.get(name) or "") for name in ("forward_node", "destination", "series_uid")}
    count = 0
    if ids:
        with _dead_letters(console) as dead:
            count = dead.replay(ids, None, False)
        console.audit.record(
            actor=caller.actor,
            origin=caller.origin,
            client=caller.client,
            action="replay",
            object="dead-letters",
            diff=[{"path": "dead-letters", "kind": "changed", "before": None,
                   "after": {"instance_ids": sorted(ids), "count": count}}],
        )  # fmt: skip
    return see_other("/monitoring/parked?" + urlencode({**key, "replayed": str(count)}))
