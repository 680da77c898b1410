"""Operating the gateway: Services, Configuration history, Dead letters, Audit.

Each page reads and acts through the API module's functions (`api.operations`, `api.configuration`), so a
rollback is the API's rollback (one new revision, audited), a replay the API's replay, and the filters
are validated by the same types.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter, ValidationError

from karnak_console.api import configuration
from karnak_console.api import operations as api
from karnak_console.api.common import ConsoleDep
from karnak_console.audit import AuditEntry
from karnak_console.context import Console
from karnak_console.pages import (
    FormErrors,
    FormReader,
    PageAuditor,
    PageOperator,
    PageReader,
    PageStatusReader,
    PageWriter,
    is_htmx,
    page_router,
    render,
    see_other,
)
from karnak_console.pages.projects import missing
from karnak_console.problems import ApiProblem, validation_problems
from karnak_console.security import Caller

router = page_router()

# The session's one-time message shown by the next page (what the last action did).
NOTICE = "operations_notice"


def shown(value: Any) -> str:
    """A configuration value as a diff shows it: JSON for lists and mappings, the text otherwise."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# --- services -------------------------------------------------------------------------------------


@router.get("/services")
def services(request: Request, caller: PageStatusReader, console: ConsoleDep) -> HTMLResponse:
    status = api.services(caller, console)
    # htmx refreshes the table alone every few seconds; a plain GET gets the whole page.
    template = "operations/services_table.html" if is_htmx(request) else "operations/services.html"
    return render(request, template, caller, status_board=status)


# --- configuration history ------------------------------------------------------------------------


@router.get("/history")
def history(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    revisions = configuration.list_revisions(caller, console, limit=200)
    notice = request.session.pop(NOTICE, None)
    return render(request, "operations/history.html", caller, revisions=revisions, notice=notice)


def _revision_page(
    request: Request, caller: Caller, console: Console, number: int, base: int | None, **values: Any
) -> HTMLResponse:
    try:
        detail = configuration.get_revision(number, caller, console)
        diff = configuration.diff_revision(number, caller, console, base)
    except ApiProblem as problem:
        return missing(request, caller, problem)
    latest = console.store.latest()
    return render(
        request,
        "operations/revision.html",
        caller,
        revision=detail,
        diff=diff,
        latest=latest.number if latest is not None else 0,
        bases=[(str(n), f"revision {n}") for n in range(number - 1, -1, -1)],
        shown=shown,
        notice=request.session.pop(NOTICE, None),
        **values,
    )


@router.get("/history/{number}")
def revision(
    number: int, request: Request, caller: PageReader, console: ConsoleDep, base: int | None = None
) -> HTMLResponse:
    return _revision_page(request, caller, console, number, base)


@router.post("/history/{number}/rollback")
async def rollback(number: int, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    """With `preview`: what the rollback would change (the API's dry run); without: the rollback itself."""
    form = FormReader(await request.form())
    preview = form.checked("preview")
    try:
        result = configuration.rollback_revision(number, caller, console, dry_run=preview)
    except ApiProblem as problem:
        return _revision_page(request, caller, console, number, None, errors=FormErrors.from_problem(problem))
    if preview:
        return _revision_page(request, caller, console, number, None, preview=result, shown_preview=True)
    request.session[NOTICE] = (
        f"Rolled back to revision {number}: stored as revision {result.revision}."
        if result.changed
        else f"Revision {number} is what the gateway runs already: nothing changed."
    )
    return see_other(f"/history/{result.revision}" if result.changed else f"/history/{number}")


# --- dead letters ---------------------------------------------------------------------------------


def _dead_letters_page(
    request: Request,
    caller: Caller,
    console: Console,
    destination: str | None,
    reason: str | None,
    *,
    status: int = 200,
    errors: FormErrors | None = None,
) -> HTMLResponse:
    letters: list[api.DeadLetter] = []
    every: list[api.DeadLetter] = []
    found = errors or FormErrors()
    try:
        every = api.list_dead_letters(caller, console, limit=10000)
        letters = [
            letter
            for letter in every
            if (not destination or letter.destination == destination) and (not reason or reason in letter.reason)
        ]
    except ApiProblem as problem:
        found = FormErrors.from_problem(problem)
        status = problem.status
    destinations = sorted({letter.destination for letter in every})
    return render(
        request,
        "operations/dead_letters.html",
        caller,
        status=status,
        letters=letters,
        total=len(every),
        destinations=[("", "Every destination")] + [(d, d) for d in destinations],
        destination=destination or "",
        reason=reason or "",
        errors=found,
        notice=request.session.pop(NOTICE, None),
    )


@router.get("/dead-letters")
def dead_letters(
    request: Request,
    caller: PageOperator,
    console: ConsoleDep,
    destination: str | None = None,
    reason: str | None = None,
) -> HTMLResponse:
    return _dead_letters_page(request, caller, console, destination or None, reason or None)


def _selection(form: FormReader) -> api.DeadLetterSelection:
    scope = form.text("scope")
    if scope == "destination":
        return api.DeadLetterSelection(destination=form.text("destination"))
    return api.DeadLetterSelection(instance_ids=form.values("instance_ids"))


def _back(form: FormReader) -> str:
    query = "&".join(f"{k}={v}" for k in ("destination", "reason") if (v := form.text(f"filter_{k}")))
    return "/dead-letters" + (f"?{query}" if query else "")


def _selection_refused(
    request: Request, caller: Caller, console: Console, form: FormReader, problem: ApiProblem
) -> Response:
    """The dead letters page again, as it was filtered, with the API's refusal next to its field."""
    return _dead_letters_page(
        request,
        caller,
        console,
        form.text("filter_destination"),
        form.text("filter_reason"),
        status=422,
        errors=FormErrors.from_problem(problem),
    )


@router.post("/dead-letters/replay")
async def replay(request: Request, caller: PageOperator, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    try:
        count = api.replay_dead_letters(_selection(form), caller, console)
    except ApiProblem as problem:
        return _selection_refused(request, caller, console, form, problem)
    request.session[NOTICE] = f"{count.count} message(s) sent back where they came from."
    return see_other(_back(form))


@router.post("/dead-letters/delete")
async def delete(request: Request, caller: PageOperator, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    try:
        # The button asked before the form was sent (data-confirm); `confirm` says it was answered yes.
        count = api.delete_dead_letters(_selection(form), caller, console, confirm=form.checked("confirm"))
    except ApiProblem as problem:
        return _selection_refused(request, caller, console, form, problem)
    request.session[NOTICE] = f"{count.count} message(s) deleted."
    return see_other(_back(form))


# --- audit ----------------------------------------------------------------------------------------

ORIGINS = [("", "Any origin"), ("console", "console"), ("api", "api"), ("cli", "cli")]
_WHEN = TypeAdapter(dt.datetime)


@router.get("/audit")
def audit(
    request: Request,
    caller: PageAuditor,
    console: ConsoleDep,
    actor: str = "",
    origin: str = "",
    object: str = "",  # noqa: A002 - the audit's word
    action: str = "",
    since: str = "",
    until: str = "",
) -> HTMLResponse:
    errors = FormErrors(summary="The filter has errors.")
    times: dict[str, dt.datetime | None] = {}
    for name, text in (("since", since), ("until", until)):
        times[name] = None
        if text.strip():
            try:
                parsed = _WHEN.validate_python(text.strip())
                times[name] = parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
            except ValidationError as exc:
                errors.add(name, validation_problems(exc.errors())[0].message)
    if origin not in {value for value, _ in ORIGINS}:
        errors.add("origin", "must be one of console, api, cli")
    entries: list[AuditEntry] = []
    if not errors.fields:
        entries = api.audit(
            caller,
            console,
            actor=actor.strip() or None,
            origin=origin or None,  # type: ignore[arg-type]
            object=object.strip() or None,
            action=action.strip() or None,
            since=times["since"],
            until=times["until"],
            limit=200,
        )
    return render(
        request,
        "operations/audit.html",
        caller,
        status=200 if not errors.fields else 422,
        entries=entries,
        origins=ORIGINS,
        filters={"actor": actor, "origin": origin, "object": object, "action": action, "since": since, "until": until},
        errors=errors if errors.fields else FormErrors(),
        shown=shown,
    )
