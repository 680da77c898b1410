"""Operating the gateway: the services' status, dead letters, tools, pseudonyms, the audit trail."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from karnak_console.api.common import Auditor, ConsoleDep, Operator, PseudonymKeeper, StatusReader
from karnak_console.audit import AuditEntry, AuditFilter
from karnak_console.context import Console
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.security import Caller
from karnak_console.statusboard import BROKER_ERRORS, STALE_AFTER_SECONDS
from karnak_console.tools import EchoResult, echo, kheops_token, stow_probe
from karnak_shared.config import AETitle, HttpUrl, Port
from karnak_shared.pseudonym_store import (
    PseudonymEntry,
    PseudonymImportError,
    delete_pseudonyms,
    export_csv,
    import_text,
    list_pseudonyms,
    lookup_pseudonym,
    store_pseudonyms,
)

router = APIRouter(prefix="/api/v1")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- services -------------------------------------------------------------------------------------


class Instance(BaseModel):
    service: str
    instance_id: str
    host: str
    pid: int
    version: str
    revision: int | None
    runs_latest: bool
    ready: bool
    broker_connected: bool
    started_at: float
    last_error: str | None
    seen_seconds_ago: float
    stale: bool


class Services(BaseModel):
    latest_revision: int
    # Whether the console itself hears the services (its connection to RabbitMQ is up).
    listening: bool
    instances: list[Instance]


@router.get("/services", tags=["services"], summary="Every service instance and the revision it runs")
def services(caller: StatusReader, console: ConsoleDep) -> Services:
    latest = console.store.latest()
    number = latest.number if latest is not None else 0
    board = console.status
    reports = board.reports() if board is not None else []
    return Services(
        latest_revision=number,
        listening=board is not None and board.connected.is_set(),
        instances=[
            Instance(
                **report.model_dump(exclude={"sent_at"}),
                runs_latest=report.revision == number,
                seen_seconds_ago=round(age, 1),
                stale=age > STALE_AFTER_SECONDS,
            )
            for report, age in reports
        ],
    )


# --- dead letters ---------------------------------------------------------------------------------


class DeadLetter(BaseModel):
    instance_id: str
    destination: str
    sop_instance_uid: str
    reason: str
    parked_at: str
    origin_exchange: str
    origin_routing_key: str


class DeadLetterSelection(Strict):
    instance_ids: list[str] = []
    destination: str | None = None
    all: bool = False


class Count(BaseModel):
    count: int


@contextmanager
def _dead_letters(console: Console) -> Iterator[Any]:
    """The dead-letter queue, for one request; 503 naming why when RabbitMQ cannot be used."""
    from karnak_shared.deadletters import DeadLetterQueue

    try:
        dead = DeadLetterQueue.connect(console.gateway_config())
    except BROKER_ERRORS as exc:
        raise ApiProblem(503, f"the dead-letter queue cannot be reached: {exc!r}") from None
    try:
        yield dead
    except BROKER_ERRORS as exc:
        raise ApiProblem(503, f"RabbitMQ failed during the operation: {exc!r}") from None
    finally:
        dead.close()


@router.get("/dead-letters", tags=["dead letters"], summary="Parked messages, oldest first (nothing is removed)")
def list_dead_letters(
    caller: Operator,
    console: ConsoleDep,
    destination: str | None = None,
    reason: Annotated[str | None, Query(description="a part of the reason")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> list[DeadLetter]:
    with _dead_letters(console) as dead:
        entries = dead.list(limit=limit)
    return [
        DeadLetter(**e.as_dict())
        for e in entries
        if (destination is None or e.destination == destination) and (reason is None or reason in e.reason)
    ]


def _selection_or_refuse(selection: DeadLetterSelection) -> None:
    if not (selection.all or selection.instance_ids or selection.destination):
        raise ApiProblem(
            422,
            "say which messages: instance_ids, destination, or all=true",
            [FieldProblem(field="instance_ids", message="is required without destination or all")],
        )


def _audit_operation(console: Console, caller: Caller, action: str, object: str, detail: dict[str, Any]) -> None:  # noqa: A002
    console.audit.record(
        actor=caller.actor,
        origin=caller.origin,
        client=caller.client,
        action=action,
        object=object,
        diff=[{"path": object, "kind": "changed", "before": None, "after": detail}],
    )


@router.post("/dead-letters:replay", tags=["dead letters"], summary="Send parked messages back where they came from")
def replay_dead_letters(selection: DeadLetterSelection, caller: Operator, console: ConsoleDep) -> Count:
    _selection_or_refuse(selection)
    with _dead_letters(console) as dead:
        count = dead.replay(set(selection.instance_ids), selection.destination, selection.all)
    _audit_operation(console, caller, "replay", "dead-letters", {**selection.model_dump(), "count": count})
    return Count(count=count)


@router.post("/dead-letters:delete", tags=["dead letters"], summary="Delete parked messages for good")
def delete_dead_letters(
    selection: DeadLetterSelection,
    caller: Operator,
    console: ConsoleDep,
    confirm: Annotated[bool, Query(description="true: yes, delete them")] = False,
) -> Count:
    _selection_or_refuse(selection)
    if not confirm:
        raise ApiProblem(409, "deleting parked messages cannot be undone: send confirm=true")
    with _dead_letters(console) as dead:
        count = dead.delete(set(selection.instance_ids), selection.destination, selection.all)
    _audit_operation(console, caller, "delete", "dead-letters", {**selection.model_dump(), "count": count})
    return Count(count=count)


# --- tools ----------------------------------------------------------------------------------------


class EchoRequest(Strict):
    """C-ECHO a configured destination (its calling AE and TLS), or any AE."""

    destination: str | None = None
    ae_title: AETitle | None = None
    hostname: Annotated[str | None, Field(max_length=253)] = None
    port: Port | None = None
    calling_ae_title: AETitle | None = None


@router.post("/tools/echo", tags=["tools"], summary="C-ECHO a destination or an AE")
def tool_echo(body: EchoRequest, caller: Operator, console: ConsoleDep) -> EchoResult:
    if body.destination is None and (body.ae_title is None or body.hostname is None or body.port is None):
        raise ApiProblem(
            422,
            "give a destination, or ae_title, hostname and port",
            [FieldProblem(field="destination", message="is required without ae_title, hostname and port")],
        )
    return echo(console, body.destination, body.ae_title, body.hostname, body.port, body.calling_ae_title)


class StowProbeRequest(Strict):
    destination: str | None = None
    url: HttpUrl | None = None


@router.post("/tools/stow-probe", tags=["tools"], summary="Probe a STOW-RS endpoint (TLS, HTTP, its answer; no upload)")
def tool_stow_probe(body: StowProbeRequest, caller: Operator, console: ConsoleDep) -> dict[str, Any]:
    if body.destination is None and body.url is None:
        raise ApiProblem(
            422, "give a destination or a url", [FieldProblem(field="destination", message="is required without url")]
        )
    return stow_probe(console, body.destination, body.url)


class KheopsTokenRequest(Strict):
    """A destination's Kheops album (its tokens), or a token and the Kheops API URL."""

    destination: str | None = None
    album: Annotated[int, Field(ge=0)] = 0
    url_api: HttpUrl | None = None
    token: Annotated[str | None, Field(max_length=8192)] = None
    role: Literal["source", "destination"] = "destination"


@router.post("/tools/kheops-token", tags=["tools"], summary="Introspect Kheops tokens: active, scopes, what is missing")
def tool_kheops_token(body: KheopsTokenRequest, caller: Operator, console: ConsoleDep) -> dict[str, Any]:
    if body.destination is None and (body.url_api is None or body.token is None):
        raise ApiProblem(
            422,
            "give a destination, or url_api and token",
            [FieldProblem(field="destination", message="is required without url_api and token")],
        )
    return kheops_token(console, body.destination, body.album, body.url_api, body.token, body.role)


# --- pseudonyms -----------------------------------------------------------------------------------


class Pseudonym(Strict):
    patient_id: Annotated[str, Field(min_length=1, max_length=50)]
    issuer_of_patient_id: Annotated[str, Field(max_length=50)] = ""
    pseudonym: Annotated[str, Field(min_length=1, max_length=50)]
    first_name: Annotated[str, Field(max_length=50)] = ""
    last_name: Annotated[str, Field(max_length=50)] = ""


class PseudonymKey(Strict):
    patient_id: str
    issuer_of_patient_id: str = ""


class PseudonymDeletion(Strict):
    # Leave out with all=true to delete every entry of the project.
    keys: list[PseudonymKey] = []
    all: bool = False


class ImportResult(BaseModel):
    imported: int
    # Lines of the file that repeat a patient: already in the cache (unchanged or given a new pseudonym),
    # or an earlier line of the same file. Karnak skipped them silently.
    duplicates: dict[str, list[int]]


def _project_or_404(console: Console, project: str) -> None:
    _, document = console.editor.document()
    if not any(p.get("name") == project for p in document.get("projects", [])):
        raise ApiProblem(404, f"no project named {project!r}")


@router.get("/projects/{project}/pseudonyms", tags=["pseudonyms"], summary="List or look up a project's pseudonyms")
def list_project_pseudonyms(
    project: str,
    caller: PseudonymKeeper,
    console: ConsoleDep,
    patient_id: Annotated[str | None, Query(description="look up this patient's pseudonym")] = None,
    issuer_of_patient_id: str = "",
    pseudonym: Annotated[str | None, Query(description="find the patient of this pseudonym")] = None,
    contains: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[Pseudonym]:
    _project_or_404(console, project)
    if patient_id is not None:
        found = lookup_pseudonym(console.pseudonyms, project, patient_id, issuer_of_patient_id)
        if found is None:
            raise ApiProblem(404, "no pseudonym for this patient in the project")
        entries = [
            e
            for e in list_pseudonyms(console.pseudonyms, project, pseudonym=found, limit=None)
            if (e.patient_id, e.issuer_of_patient_id) == (patient_id, issuer_of_patient_id)
        ]
    else:
        entries = list_pseudonyms(
            console.pseudonyms, project, contains=contains, pseudonym=pseudonym, limit=limit, offset=offset
        )
    return [Pseudonym(**e.__dict__) for e in entries]


@router.post(
    "/projects/{project}/pseudonyms", status_code=201, tags=["pseudonyms"], summary="Add a patient's pseudonym"
)
def add_pseudonym(project: str, body: Pseudonym, caller: PseudonymKeeper, console: ConsoleDep) -> Count:
    _project_or_404(console, project)
    _refuse_taken_pseudonym(console, project, body, None)
    if lookup_pseudonym(console.pseudonyms, project, body.patient_id, body.issuer_of_patient_id) is not None:
        raise ApiProblem(409, "this patient already has a pseudonym in the project: delete it first to change it")
    count = store_pseudonyms(console.pseudonyms, project, [PseudonymEntry(**body.model_dump())])
    # The audit names no patient: the object is the project's cache.
    _audit_operation(console, caller, "add", f"projects/{project}/pseudonyms", {"count": count})
    return Count(count=count)


def _refuse_taken_pseudonym(console: Console, project: str, body: Pseudonym, replacing: PseudonymKey | None) -> None:
    """409 when the pseudonym belongs to another patient of the project (than `body`'s or the one replaced)."""
    existing = list_pseudonyms(console.pseudonyms, project, pseudonym=body.pseudonym, limit=1)
    owners = {(body.patient_id, body.issuer_of_patient_id)}
    if replacing is not None:
        owners.add((replacing.patient_id, replacing.issuer_of_patient_id))
    if existing and (existing[0].patient_id, existing[0].issuer_of_patient_id) not in owners:
        raise ApiProblem(
            409,
            "this pseudonym is already given to another patient of the project",
            [FieldProblem(field="pseudonym", message="is already given to another patient of the project")],
        )


class PseudonymEdit(Strict):
    """One entry changed: `key` names the patient as stored, `entry` is what it becomes."""

    key: PseudonymKey
    entry: Pseudonym


@router.post("/projects/{project}/pseudonyms:edit", tags=["pseudonyms"], summary="Change one patient's entry")
def edit_pseudonym(project: str, body: PseudonymEdit, caller: PseudonymKeeper, console: ConsoleDep) -> Count:
    _project_or_404(console, project)
    old = (body.key.patient_id, body.key.issuer_of_patient_id)
    new = (body.entry.patient_id, body.entry.issuer_of_patient_id)
    if lookup_pseudonym(console.pseudonyms, project, *old) is None:
        raise ApiProblem(404, "no such patient in the project's pseudonyms")
    _refuse_taken_pseudonym(console, project, body.entry, body.key)
    if new != old and lookup_pseudonym(console.pseudonyms, project, *new) is not None:
        raise ApiProblem(
            409,
            "this patient already has a pseudonym in the project",
            [FieldProblem(field="patient_id", message="already has a pseudonym in the project")],
        )
    # The new entry is stored before the old key goes, so a failure in between loses nothing.
    store_pseudonyms(console.pseudonyms, project, [PseudonymEntry(**body.entry.model_dump())])
    if new != old:
        delete_pseudonyms(console.pseudonyms, project, [old])
    _audit_operation(console, caller, "edit", f"projects/{project}/pseudonyms", {"count": 1})
    return Count(count=1)


@router.post(
    "/projects/{project}/pseudonyms:import",
    tags=["pseudonyms"],
    openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}},
    summary="Import CSV; map columns with ?pseudonym=COLUMN&patient_id=COLUMN&... (default: recognised headers)",
)
async def import_pseudonyms(
    project: str,
    request: Request,
    caller: PseudonymKeeper,
    console: ConsoleDep,
    pseudonym: Annotated[str | None, Query(description="the column of the external pseudonym")] = None,
    patient_id: Annotated[str | None, Query(description="the column of the Patient ID")] = None,
    issuer_of_patient_id: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    delimiter: Annotated[str | None, Query(min_length=1, max_length=1)] = None,
    from_line: Annotated[int, Query(ge=1, description="the line of the header (lines before it are skipped)")] = 1,
) -> ImportResult:
    try:
        text = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiProblem(422, "the file is not UTF-8 text") from None
    given = {
        "pseudonym": pseudonym,
        "patient_id": patient_id,
        "issuer_of_patient_id": issuer_of_patient_id,
        "first_name": first_name,
        "last_name": last_name,
    }
    mapping = {k: v for k, v in given.items() if v is not None} or None
    return import_pseudonym_text(project, text, mapping, delimiter, from_line, caller, console)


def import_pseudonym_text(
    project: str,
    text: str,
    mapping: dict[str, str] | None,
    delimiter: str | None,
    from_line: int,
    caller: Caller,
    console: Console,
) -> ImportResult:
    """Import a CSV text into a project's cache (the API's and the Pseudonyms page's one way)."""
    _project_or_404(console, project)
    if from_line > 1:
        text = "".join(io.StringIO(text).readlines()[from_line - 1 :])
    if mapping is not None:
        missing = [f for f in ("pseudonym", "patient_id") if f not in mapping]
        if missing:
            raise ApiProblem(
                422,
                f"These fields are not selected: {', '.join(missing)}",
                [FieldProblem(field=f, message="is required with a column mapping") for f in missing],
            )
    try:
        report = import_text(console.pseudonyms, project, text, "the CSV file", mapping, delimiter)
    except PseudonymImportError as exc:
        raise ApiProblem(422, "nothing imported", [FieldProblem(field="", message=p) for p in exc.problems]) from None
    _audit_operation(console, caller, "import", f"projects/{project}/pseudonyms", {"count": report.imported})
    return ImportResult(
        imported=report.imported,
        duplicates={"unchanged": report.unchanged, "replaced": report.replaced, "repeated": report.repeated},
    )


@router.get(
    "/projects/{project}/pseudonyms:export",
    tags=["pseudonyms"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
    summary="Export a project's pseudonyms as CSV (with the names)",
)
def export_pseudonyms(project: str, caller: PseudonymKeeper, console: ConsoleDep) -> Response:
    _project_or_404(console, project)
    out = io.StringIO()
    export_csv(console.pseudonyms, project, out, include_names=True)
    return Response(
        out.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{project}-pseudonyms.csv"'},
    )


@router.post("/projects/{project}/pseudonyms:delete", tags=["pseudonyms"], summary="Delete selected entries, or all")
def remove_pseudonyms(
    project: str,
    body: PseudonymDeletion,
    caller: PseudonymKeeper,
    console: ConsoleDep,
    confirm: Annotated[bool, Query(description="true: yes, delete them")] = False,
) -> Count:
    _project_or_404(console, project)
    if not body.all and not body.keys:
        raise ApiProblem(
            422, "say which entries: keys, or all=true", [FieldProblem(field="keys", message="is required without all")]
        )
    if not confirm:
        what = "all the patients of the project" if body.all else f"the {len(body.keys)} selected patient(s)"
        raise ApiProblem(409, f"You are about to delete {what}: send confirm=true")
    keys = None if body.all else [(k.patient_id, k.issuer_of_patient_id) for k in body.keys]
    count = delete_pseudonyms(console.pseudonyms, project, keys)
    _audit_operation(console, caller, "delete", f"projects/{project}/pseudonyms", {"count": count, "all": body.all})
    return Count(count=count)


# --- audit ----------------------------------------------------------------------------------------


@router.get("/audit", tags=["audit"], summary="Every change: who, when, from where, on what, the diff (secrets masked)")
def audit(
    caller: Auditor,
    console: ConsoleDep,
    actor: str | None = None,
    origin: Literal["api", "console", "cli"] | None = None,
    object: Annotated[str | None, Query(description="the object, or a prefix of it (forward-nodes/GW)")] = None,  # noqa: A002
    action: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> list[AuditEntry]:
    return console.audit.entries(AuditFilter(actor, origin, object, action, since, until, limit))
