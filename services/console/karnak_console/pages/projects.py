"""Projects, Profiles and Auth configs (Karnak's `/projects`, `/profile`, `/auth-config`).

Every read and write goes through the API module's own functions (`api.projects`), so the pages refuse what
the API refuses, with its messages: a secret change of a used project without confirmation, a profile with
bad elements, a profile or a project still in use. Secrets are write-only: the pages show the API's mask
(`••••cdef`) and a generated secret once, in the answer to the post that made it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from karnak_console.api import projects as api
from karnak_console.api.common import ConsoleDep
from karnak_console.context import Console
from karnak_console.pages import FormErrors, FormReader, PageReader, PageWriter, page_router, render, see_other
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.security import Caller

router = page_router()

SECRET_WARNING = (
    "If you change the project secret, the consistency of previously de-identified DICOM files cannot be "
    "guaranteed anymore."
)


def errors_of(problem: ApiProblem, collection: str) -> FormErrors:
    """The API's problems keyed by the form's field names: `projects[2].secret` and `secret` -> `secret`."""
    problems = []
    for found in problem.errors:
        name = found.field
        if name.startswith(collection + "["):
            _, _, name = name.partition("].")
        problems.append(FieldProblem(field=name, message=found.message))
    return FormErrors.of(problems, summary=problem.detail)


def missing(request: Request, caller: Caller, problem: ApiProblem) -> HTMLResponse:
    """A page of something that does not exist (any more): the API's 404 message, in the layout."""
    return render(request, "projects/missing.html", caller, status=problem.status, message=problem.detail)


# --- projects -------------------------------------------------------------------------------------


def _profile_options(console: Console, caller: Caller) -> list[tuple[str, str]]:
    listing = api.list_profiles(caller, console)
    options = [("", "Choose the de-identification profile")]
    for profile in listing.items:
        version = f" [version {profile['version']}]" if profile.get("version") else ""
        options.append((str(profile["name"]), f"{profile['name']}{version}"))
    return options


def _projects_page(
    request: Request, caller: Caller, console: Console, *, status: int = 200, **values: Any
) -> HTMLResponse:
    listing = api.list_projects(caller, console)
    values.setdefault("new", {})
    return render(
        request,
        "projects/list.html",
        caller,
        status=status,
        projects=listing.items,
        profiles=_profile_options(console, caller),
        **values,
    )


def _project_page(
    request: Request, caller: Caller, console: Console, name: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    try:
        item = api.get_project(name, caller, console).item
    except ApiProblem as problem:
        return missing(request, caller, problem)
    values.setdefault("entered", item)
    return render(
        request,
        "projects/project.html",
        caller,
        status=status,
        project=item,
        profiles=_profile_options(console, caller),
        warning=SECRET_WARNING,
        **values,
    )


@router.get("/projects")
def projects(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _projects_page(request, caller, console)


@router.post("/projects")
async def create_project(request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body: dict[str, Any] = {"name": form.text("name") or "", "profile": form.text("profile") or ""}
    if form.text("secret"):
        body["secret"] = form.text("secret")
    try:
        result = api.add_project(dict(body), caller, console, None)
    except ApiProblem as problem:
        return _projects_page(request, caller, console, status=422, errors=errors_of(problem, "projects"), new=body)
    return _project_page(
        request, caller, console, body["name"], status=201, new_secret=result.secret, notice="Project created."
    )


@router.get("/projects/{name}")
def project(name: str, request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _project_page(request, caller, console, name)


@router.post("/projects/{name}")
async def update_project(name: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body: dict[str, Any] = {"name": form.text("name") or "", "profile": form.text("profile") or ""}
    # Left empty, the secret is kept (the API keeps it when none is sent); typed, it is imported.
    if form.text("secret"):
        body["secret"] = form.text("secret")
    try:
        api.update_project(name, dict(body), caller, console, None, confirm=form.checked("confirm"))
    except ApiProblem as problem:
        errors = errors_of(problem, "projects")
        if problem.status == 409 and "confirm=true" in problem.detail:
            errors.add("confirm", "Tick this box to change the secret of a project in use.")
        return _project_page(request, caller, console, name, status=422, errors=errors, entered=body)
    return see_other(f"/projects/{body['name']}")


@router.post("/projects/{name}/secret:generate")
async def generate_secret(name: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    try:
        result = api.generate_secret(name, caller, console, None, confirm=form.checked("confirm_generate"))
    except ApiProblem as problem:
        errors = errors_of(problem, "projects")
        if problem.status == 409 and "confirm=true" in problem.detail:
            errors.add("confirm_generate", "Tick this box to change the secret of a project in use.")
        return _project_page(request, caller, console, name, status=409, errors=errors)
    # Shown in this answer only: the project's page shows the mask from now on.
    return _project_page(request, caller, console, name, new_secret=result.secret, notice="New secret generated.")


@router.post("/projects/{name}/delete")
async def delete_project(name: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    try:
        api.delete_project(name, caller, console, None)
    except ApiProblem as problem:
        return _project_page(request, caller, console, name, status=409, errors=errors_of(problem, "projects"))
    return see_other("/projects")


# --- profiles -------------------------------------------------------------------------------------


def _profiles_page(
    request: Request, caller: Caller, console: Console, *, status: int = 200, **values: Any
) -> HTMLResponse:
    listing = api.list_profiles(caller, console)
    return render(request, "projects/profiles.html", caller, status=status, profiles=listing.items, **values)


def _profile_page(
    request: Request, caller: Caller, console: Console, name: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    import yaml

    try:
        item = api.get_profile(name, caller, console).item
    except ApiProblem as problem:
        return missing(request, caller, problem)
    data = yaml.safe_load(str(item.get("yaml") or "")) or {}
    elements = data.get("profileElements") if isinstance(data, dict) else None
    return render(
        request,
        "projects/profile.html",
        caller,
        status=status,
        profile=item,
        metadata=data if isinstance(data, dict) else {},
        elements=[e for e in elements or [] if isinstance(e, dict)],
        **values,
    )


@router.get("/profiles")
def profiles(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _profiles_page(request, caller, console)


@router.post("/profiles")
async def upload_profile(request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = await request.form()
    upload = form.get("file")
    name = FormReader(form).text("name")
    errors = FormErrors(summary="The profile was not stored.")
    if upload is None or isinstance(upload, str) or not upload.filename:
        errors.add("file", "Choose the profile's YAML file.")
        return _profiles_page(request, caller, console, status=422, errors=errors, name=name)
    try:
        text = (await upload.read()).decode("utf-8")
    except UnicodeDecodeError:
        errors.add("file", "the profile is not UTF-8 text")
        return _profiles_page(request, caller, console, status=422, errors=errors, name=name)
    check = api.check_profile(text)
    if not check.valid:
        # Karnak's "Errors occurred in profile elements": each element with its own errors, in order.
        return _profiles_page(request, caller, console, status=422, check=check, filename=upload.filename, name=name)
    try:
        api.store_profile(text, name, caller, console, None)
    except ApiProblem as problem:
        return _profiles_page(request, caller, console, status=422, errors=errors_of(problem, "profiles"), name=name)
    return see_other(f"/profiles/{name or check.name}")


@router.get("/profiles/{name}")
def profile(name: str, request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _profile_page(request, caller, console, name)


@router.post("/profiles/{name}/delete")
async def delete_profile(name: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    try:
        api.delete_profile(name, caller, console, None)
    except ApiProblem as problem:
        return _profile_page(request, caller, console, name, status=409, errors=errors_of(problem, "profiles"))
    return see_other("/profiles")


# --- auth configs ---------------------------------------------------------------------------------


def _auth_body(form: FormReader, code: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "code": code,
        "type": "oauth2",
        "access_token_url": form.text("access_token_url") or "",
        "client_id": form.text("client_id") or "",
        "client_secret": form.text("client_secret") or "",
    }
    if form.text("scope"):
        body["scope"] = form.text("scope")
    return body


def _auth_configs_page(
    request: Request, caller: Caller, console: Console, *, status: int = 200, **values: Any
) -> HTMLResponse:
    listing = api.list_auth_configs(caller, console)
    values.setdefault("new", {})
    return render(request, "projects/auth_configs.html", caller, status=status, configs=listing.items, **values)


def _auth_config_page(
    request: Request, caller: Caller, console: Console, code: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    try:
        item = api.get_auth_config(code, caller, console).item
    except ApiProblem as problem:
        return missing(request, caller, problem)
    _, document = console.editor.masked()
    used = api.users_of_auth_config(document, code)
    values.setdefault("entered", item)
    return render(request, "projects/auth_config.html", caller, status=status, config=item, used_by=used, **values)


@router.get("/auth-configs")
def auth_configs(request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _auth_configs_page(request, caller, console)


@router.post("/auth-configs")
async def create_auth_config(request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = _auth_body(form, form.text("code") or "")
    try:
        api.add_auth_config(dict(body), caller, console, None)
    except ApiProblem as problem:
        shown = {**body, "client_id": "", "client_secret": ""}  # secrets are never written back into a page
        return _auth_configs_page(
            request, caller, console, status=422, errors=errors_of(problem, "auth_configs"), new=shown
        )
    return see_other(f"/auth-configs/{body['code']}")


@router.get("/auth-configs/{code}")
def auth_config(code: str, request: Request, caller: PageReader, console: ConsoleDep) -> HTMLResponse:
    return _auth_config_page(request, caller, console, code)


@router.post("/auth-configs/{code}")
async def update_auth_config(code: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    form = FormReader(await request.form())
    body = _auth_body(form, code)
    stored = api.get_auth_config(code, caller, console).item
    # An empty secret field keeps the stored value: the mask sent back is what the API keeps.
    for secret in ("client_id", "client_secret"):
        if not body[secret]:
            body[secret] = stored.get(secret, "")
    try:
        api.update_auth_config(code, dict(body), caller, console, None)
    except ApiProblem as problem:
        shown = {**body, "client_id": stored.get("client_id"), "client_secret": stored.get("client_secret")}
        return _auth_config_page(
            request, caller, console, code, status=422, errors=errors_of(problem, "auth_configs"), entered=shown
        )
    return see_other(f"/auth-configs/{code}")


@router.post("/auth-configs/{code}/delete")
async def delete_auth_config(code: str, request: Request, caller: PageWriter, console: ConsoleDep) -> Response:
    try:
        api.delete_auth_config(code, caller, console, None)
    except ApiProblem as problem:
        return _auth_config_page(request, caller, console, code, status=409, errors=errors_of(problem, "auth_configs"))
    return see_other("/auth-configs")
