"""External pseudonyms of a project (Karnak's `/extid`): CSV import with a column mapping, add, edit, delete.

The writes are the API's (`api.operations`): the same models (`Pseudonym`, `PseudonymKey`), the same import
and its duplicates report. Patient IDs never travel in a URL (searching, editing and deleting are posts),
so they cannot land in an access log or a browser's history.
"""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from karnak_console.api import operations as api
from karnak_console.api.common import ConsoleDep
from karnak_console.context import Console
from karnak_console.pages import FormErrors, FormReader, PagePseudonymKeeper, page_router, render, see_other
from karnak_console.pages.projects import missing
from karnak_console.problems import ApiProblem
from karnak_console.security import Caller
from karnak_shared.pseudonym_store import FIELDS, recognised_field

router = page_router()

# The columns a CSV file can be mapped to, with Karnak's names for them.
FIELD_LABELS = {
    "pseudonym": "External Pseudonym",
    "patient_id": "Patient ID",
    "first_name": "Patient first name",
    "last_name": "Patient last name",
    "issuer_of_patient_id": "Issuer of patient ID",
}
DUPLICATE_KINDS = {
    "unchanged": "already in the project with this pseudonym (skipped)",
    "replaced": "already in the project: given the file's new pseudonym",
    "repeated": "repeats a patient of an earlier line of the file (skipped)",
}
# Which of a key's parts separates patient ID from issuer in a checkbox's value (never in a DICOM LO value).
KEY_SEPARATOR = "\x1f"
# The session's one-time message shown by the next page (what the last change did).
NOTICE = "pseudonyms_notice"


def _projects(console: Console) -> list[str]:
    _, document = console.editor.masked()
    return [str(p.get("name")) for p in document.get("projects", [])]


def _page(
    request: Request,
    caller: Caller,
    console: Console,
    project: str | None,
    *,
    status: int = 200,
    contains: str | None = None,
    **values: Any,
) -> HTMLResponse:
    entries: list[api.Pseudonym] = []
    if project:
        entries = api.list_project_pseudonyms(project, caller, console, contains=contains, limit=500)
    values.setdefault("new", {})
    values.setdefault("notice", request.session.pop(NOTICE, None))
    return render(
        request,
        "pseudonyms/list.html",
        caller,
        status=status,
        projects=[("", "Choose a project")] + [(name, name) for name in _projects(console)],
        project=project,
        contains=contains or "",
        entries=entries,
        key_separator=KEY_SEPARATOR,
        labels=FIELD_LABELS,
        **values,
    )


@router.get("/pseudonyms")
def pseudonyms(
    request: Request, caller: PagePseudonymKeeper, console: ConsoleDep, project: str | None = None
) -> Response:
    if project and project not in _projects(console):
        errors = FormErrors()
        errors.add("project", f"no project named {project!r}")
        return _page(request, caller, console, None, status=404, errors=errors)
    return _page(request, caller, console, project or None)


@router.post("/pseudonyms/{project}/search")
async def search(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    return _page(request, caller, console, project, contains=form.text("contains"))


def _done(request: Request, project: str, notice: str) -> Response:
    """After a change: back to the project's list (a reload sends nothing again), saying what was done."""
    request.session[NOTICE] = notice
    return see_other(f"/pseudonyms?project={quote(project)}")


def _entry_body(form: FormReader) -> dict[str, str]:
    return {name: form.text(name) or "" for name in FIELD_LABELS}


@router.post("/pseudonyms/{project}/add")
async def add(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = _entry_body(form)
    try:
        api.add_pseudonym(project, api.Pseudonym.model_validate(body), caller, console)
    except ValidationError as exc:
        return _page(request, caller, console, project, status=422, errors=FormErrors.from_validation(exc), new=body)
    except ApiProblem as problem:
        return _page(request, caller, console, project, status=409, errors=FormErrors.from_problem(problem), new=body)
    return _done(request, project, "Patient added.")


def _key(value: str) -> api.PseudonymKey:
    patient_id, _, issuer = value.partition(KEY_SEPARATOR)
    return api.PseudonymKey(patient_id=patient_id, issuer_of_patient_id=issuer)


@router.post("/pseudonyms/{project}/entry")
async def entry(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    """The edit form of one patient (asked for by a post: the patient ID stays out of the URL)."""
    form = FormReader(await request.form())
    key = _key(form.raw("key"))
    try:
        found = api.list_project_pseudonyms(
            project, caller, console, patient_id=key.patient_id, issuer_of_patient_id=key.issuer_of_patient_id
        )
    except ApiProblem as problem:
        return missing(request, caller, problem)
    return render(
        request,
        "pseudonyms/edit.html",
        caller,
        project=project,
        key=form.raw("key"),
        entered=found[0].model_dump(),
        labels=FIELD_LABELS,
    )


@router.post("/pseudonyms/{project}/edit")
async def edit(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = _entry_body(form)
    try:
        change = api.PseudonymEdit.model_validate({"key": _key(form.raw("key")).model_dump(), "entry": body})
        api.edit_pseudonym(project, change, caller, console)
    except (ValidationError, ApiProblem) as exc:
        errors = (
            FormErrors.from_validation(exc, under="entry")
            if isinstance(exc, ValidationError)
            else FormErrors.from_problem(exc)
        )
        return render(
            request,
            "pseudonyms/edit.html",
            caller,
            status=422,
            project=project,
            key=form.raw("key"),
            entered=body,
            labels=FIELD_LABELS,
            errors=errors,
        )
    return _done(request, project, "Patient saved.")


@router.post("/pseudonyms/{project}/delete")
async def delete(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    everything = form.text("scope") == "all"
    keys = [] if everything else [_key(value) for value in form.form.getlist("selected") if isinstance(value, str)]
    try:
        # The form asked "Do you confirm…?" before it was sent (data-confirm), and says so with `confirm`.
        count = api.remove_pseudonyms(
            project, api.PseudonymDeletion(keys=keys, all=everything), caller, console, confirm=form.checked("confirm")
        )
    except ApiProblem as problem:
        return _page(request, caller, console, project, status=422, errors=FormErrors.from_problem(problem))
    return _done(request, project, f"{count.count} patient(s) deleted.")


# --- CSV import: the file and its separator, then the columns, then the report ---------------------


def _header(text: str, delimiter: str, from_line: int) -> list[str]:
    lines = io.StringIO(text).readlines()[from_line - 1 :]
    for row in csv.reader(lines, delimiter=delimiter):
        return [name.strip() for name in row]
    return []


def _guess(header: list[str]) -> dict[str, str]:
    """The column the import would pick for each field by itself (the store's own recognised names)."""
    found: dict[str, str] = {}
    for name in header:
        field = recognised_field(name)
        if field is not None:
            found.setdefault(field, name)
    return found


@router.post("/pseudonyms/{project}/import")
async def import_file(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    """Step 1: the file, its separator and the line of its header; answered with the column mapping."""
    form = await request.form()
    reader = FormReader(form)
    upload = form.get("file")
    errors = FormErrors(summary="The CSV file was not read.")
    delimiter = reader.raw("delimiter") or ","
    from_line = reader.integer("from_line") or 1
    if len(delimiter) != 1:
        errors.add("delimiter", "must be one character")
    if not isinstance(from_line, int) or from_line < 1:
        errors.add("from_line", "must be a whole number, 1 or more")
    if upload is None or isinstance(upload, str) or not upload.filename:
        errors.add("file", "Choose the CSV file.")
    if errors.fields:
        return _page(request, caller, console, project, status=422, errors=errors)
    assert not isinstance(upload, str) and upload is not None and isinstance(from_line, int)
    try:
        text = (await upload.read()).decode("utf-8-sig")
    except UnicodeDecodeError:
        errors.add("file", "the file is not UTF-8 text")
        return _page(request, caller, console, project, status=422, errors=errors)
    header = _header(text, delimiter, from_line)
    if not header:
        errors.add("file", f"the file has no line {from_line} (its header)")
        return _page(request, caller, console, project, status=422, errors=errors)
    return _mapping_page(
        request,
        caller,
        project,
        text,
        delimiter,
        from_line,
        header,
        _guess(header),
        upload.filename or "",
        FormErrors(),
    )


def _mapping_page(
    request: Request,
    caller: Caller,
    project: str,
    text: str,
    delimiter: str,
    from_line: int,
    header: list[str],
    chosen: dict[str, str],
    filename: str,
    errors: FormErrors,
    status: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "pseudonyms/mapping.html",
        caller,
        status=status,
        project=project,
        text=text,
        delimiter=delimiter,
        from_line=from_line,
        columns=[("", "(not in the file)")] + [(name, name) for name in header],
        chosen=chosen,
        filename=filename,
        labels=FIELD_LABELS,
        errors=errors,
    )


@router.post("/pseudonyms/{project}/import/columns")
async def import_columns(project: str, request: Request, caller: PagePseudonymKeeper, console: ConsoleDep) -> Response:
    """Step 2: the import with the chosen columns; answered with what was imported and the duplicates."""
    form = FormReader(await request.form())
    text, delimiter = form.raw("text"), form.raw("delimiter") or ","
    from_line = form.integer("from_line")
    from_line = from_line if isinstance(from_line, int) and from_line >= 1 else 1
    mapping = {field: column for field in FIELDS if (column := form.text(field))}
    used = [column for column in mapping.values()]
    errors = FormErrors()
    for field, column in mapping.items():
        if used.count(column) > 1:
            errors.add(field, f"the column {column} is chosen for another field too")
    try:
        if errors:
            raise ApiProblem(422, "each column can be chosen for one field only")
        result = api.import_pseudonym_text(project, text, mapping, delimiter, from_line, caller, console)
    except ApiProblem as problem:
        found = FormErrors.from_problem(problem)
        found.fields.update(errors.fields)
        header = _header(text, delimiter, from_line)
        return _mapping_page(
            request, caller, project, text, delimiter, from_line, header, mapping, form.raw("filename"), found, 422
        )
    lines = io.StringIO(text).readlines()[from_line - 1 :]
    duplicates = [
        (line + from_line - 1, DUPLICATE_KINDS[kind], lines[line - 1].rstrip("\r\n") if line <= len(lines) else "")
        for kind, numbers in result.duplicates.items()
        for line in numbers
    ]
    return _page(
        request,
        caller,
        console,
        project,
        notice=f"{result.imported} patient(s) imported from {form.raw('filename') or 'the file'}.",
        duplicates=sorted(duplicates),
    )
