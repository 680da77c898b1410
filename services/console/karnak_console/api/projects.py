"""Projects (secret write-only), profiles (Karnak YAML) and auth configs (OAuth2 client credentials).

A project's secret is never returned: GET shows `••••cdef`; `secret:generate` returns a new one once.
Changing the secret of a project that destinations use changes every pseudonym and UID they produce
from then on, so it needs `confirm=true` and the refusal says why.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from karnak_console.api.common import BasedOn, ConsoleDep, Reader, Writer, json_object, register_schema
from karnak_console.api.routing import Item, Listing
from karnak_console.context import Console
from karnak_console.editor import WriteResult
from karnak_console.masking import is_masked
from karnak_console.problems import ApiProblem, FieldProblem
from karnak_console.security import Caller
from karnak_dicom.deid.profile import Profile, profile_json_schema, profile_problems
from karnak_dicom.located_yaml import load_located_yaml
from karnak_shared.config import AuthConfig
from karnak_shared.errors import ConfigError
from karnak_shared.revisions import Document

router = APIRouter(prefix="/api/v1")

Confirm = Annotated[bool, Query(description="confirm a change whose consequences the refusal explained")]

YAML_TYPES = ("application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", "text/plain")


class ProjectBody(BaseModel):
    """A project as written: `profile` names a stored profile (or is a path or the YAML text)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    profile: str
    # 32 hexadecimal digits (dashes allowed); left out on creation, a random one is generated.
    secret: str | None = None


PROJECT_BODY = register_schema("Project", TypeAdapter(ProjectBody))
AUTH_CONFIG_BODY = register_schema("AuthConfig", TypeAdapter(AuthConfig))
YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-yaml": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
}


class SecretWriteResult(WriteResult):
    # The new secret, shown this once (generated ones only).
    secret: str | None = None


def _projects(document: Document) -> list[dict[str, Any]]:
    items = document.setdefault("projects", [])
    assert isinstance(items, list)
    return items


def _project_index(document: Document, name: str) -> int:
    for index, project in enumerate(_projects(document)):
        if project.get("name") == name:
            return index
    raise ApiProblem(404, f"no project named {name!r}")


def users_of_project(document: Document, name: str) -> list[str]:
    """`<forward node>/<destination> (deidentification|tag_morphing)` of every destination using it."""
    found = []
    for node in document.get("forward_nodes", []):
        for dest in node.get("destinations", []):
            for field in ("deidentification", "tag_morphing"):
                ref = dest.get(field)
                if isinstance(ref, dict) and ref.get("project") == name:
                    found.append(f"{node.get('ae_title')}/{dest.get('id')} ({field})")
    return found


def new_secret() -> str:
    """16 random bytes as 32 hexadecimal digits, as Karnak's HMAC.generateRandomKey."""
    return secrets.token_hex(16)


def _refuse_unknown_profile(document: Document, body: dict[str, Any]) -> None:
    profile = body.get("profile")
    names = [str(p.get("name")) for p in _profiles(document)]
    if isinstance(profile, str) and "\n" not in profile and profile not in names:
        raise ApiProblem(
            422,
            "the configuration would be invalid",
            [FieldProblem(field="profile", message=f"no profile named '{profile}' in profiles (upload it first)")],
        )


def _real_secret(console: Console, name: str) -> str | None:
    latest = console.editor.latest()
    if latest is None:
        return None
    routing = console.editor.validated(latest)
    project = next((p for p in routing.projects if p.name == name), None)
    return None if project is None else project.secret.get_secret_value()


def _refuse_unconfirmed_secret_change(document: Document, name: str, confirm: bool) -> None:
    used = users_of_project(document, name)
    if used and not confirm:
        raise ApiProblem(
            409,
            f"project {name!r} is used by {', '.join(used)}: if you change the project secret, the consistency "
            "of previously de-identified DICOM files cannot be guaranteed anymore (new pseudonyms and UIDs "
            "from now on); send confirm=true to change it",
        )


# --- projects -------------------------------------------------------------------------------------


@router.get("/projects", tags=["projects"], summary="List the projects (secrets masked)")
def list_projects(caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    items = [{**p, "used_by": users_of_project(document, str(p.get("name")))} for p in _projects(document)]
    return Listing(revision=number, items=items)


@router.post("/projects", status_code=201, tags=["projects"], openapi_extra=PROJECT_BODY, summary="Create a project")
async def create_project(request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> SecretWriteResult:
    return add_project(await json_object(request), caller, console, based_on)


def add_project(body: dict[str, Any], caller: Caller, console: Console, based_on: int | None) -> SecretWriteResult:
    """Create a project from its JSON body (the API's and the Projects page's one way)."""
    name = str(body.get("name", ""))
    generated = None
    if body.get("secret") in (None, ""):
        generated = body["secret"] = new_secret()

    def mutate(document: Document) -> None:
        if any(p.get("name") == name for p in _projects(document)):
            raise ApiProblem(409, f"a project named {name!r} already exists")
        _refuse_unknown_profile(document, body)
        _projects(document).append(body)

    result = console.editor.change(caller, action="create", object=f"projects/{name}", mutate=mutate, based_on=based_on)
    return SecretWriteResult(**result.model_dump(), secret=generated)


@router.get("/projects/{name}", tags=["projects"], summary="Get a project (secret masked)")
def get_project(name: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    project = _projects(document)[_project_index(document, name)]
    return Item(revision=number, item={**project, "used_by": users_of_project(document, name)})


@router.put(
    "/projects/{name}",
    tags=["projects"],
    openapi_extra=PROJECT_BODY,
    summary="Replace a project (no secret or a masked one keeps the secret)",
)
async def replace_project(
    name: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn, confirm: Confirm = False
) -> WriteResult:
    return update_project(name, await json_object(request), caller, console, based_on, confirm)


def update_project(
    name: str, body: dict[str, Any], caller: Caller, console: Console, based_on: int | None, confirm: bool = False
) -> WriteResult:
    """Replace a project from its JSON body; a new secret for a used project needs `confirm`."""
    current = _real_secret(console, name)

    def mutate(document: Document) -> None:
        index = _project_index(document, name)
        stored = _projects(document)[index]
        if body.get("profile") != stored.get("profile"):
            _refuse_unknown_profile(document, body)
        secret = body.get("secret")
        if secret in (None, "") or is_masked(secret):
            body["secret"] = stored.get("secret")
        elif str(secret).replace("-", "").lower() != (current or "").replace("-", "").lower():
            _refuse_unconfirmed_secret_change(document, name, confirm)
        if body.get("name") != name:
            used = users_of_project(document, name)
            if used:
                raise ApiProblem(409, f"project {name!r} cannot be renamed while {', '.join(used)} use it")
        _projects(document)[index] = body

    return console.editor.change(caller, action="update", object=f"projects/{name}", mutate=mutate, based_on=based_on)


@router.delete("/projects/{name}", tags=["projects"], summary="Delete a project no destination uses")
def delete_project(name: str, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    def mutate(document: Document) -> None:
        index = _project_index(document, name)
        used = users_of_project(document, name)
        if used:
            raise ApiProblem(
                409, f"The project {name} can't be removed: it is used by the destinations {', '.join(used)}"
            )
        del _projects(document)[index]

    return console.editor.change(caller, action="delete", object=f"projects/{name}", mutate=mutate, based_on=based_on)


@router.post(
    "/projects/{name}/secret:generate", tags=["projects"], summary="Give a project a new random secret, returned once"
)
def generate_secret(
    name: str, caller: Writer, console: ConsoleDep, based_on: BasedOn, confirm: Confirm = False
) -> SecretWriteResult:
    secret = new_secret()

    def mutate(document: Document) -> None:
        index = _project_index(document, name)
        _refuse_unconfirmed_secret_change(document, name, confirm)
        _projects(document)[index]["secret"] = secret

    result = console.editor.change(
        caller, action="generate-secret", object=f"projects/{name}", mutate=mutate, based_on=based_on
    )
    return SecretWriteResult(**result.model_dump(), secret=secret)


# --- profiles -------------------------------------------------------------------------------------


class ElementCheck(BaseModel):
    index: int
    name: str
    codename: str
    errors: list[str]


class ProfileCheck(BaseModel):
    """Karnak's "Errors occurred in profile elements": every element with its own errors."""

    valid: bool
    name: str | None
    version: str | None
    elements: list[ElementCheck]
    errors: list[FieldProblem]


_UNREADABLE = "Unable to read uploaded YAML file. Please make sure it is a YAML file and respects the YAML structure."


def check_profile(text: str) -> ProfileCheck:
    """Validate the profile with its models; each problem goes to its element (by index), fields as paths."""
    try:
        document = load_located_yaml(text, "profile")
    except ConfigError:
        document = None
    data = document.data if document is not None else None
    if document is None or not isinstance(data, dict):
        return ProfileCheck(
            valid=False, name=None, version=None, elements=[], errors=[FieldProblem(field="", message=_UNREADABLE)]
        )
    raw = data.get("profileElements")
    elements = [
        ElementCheck(
            index=i,
            name=str(e.get("name", "")) if isinstance(e, dict) else "",
            codename=str(e.get("codename", "")) if isinstance(e, dict) else "",
            errors=[],
        )
        for i, e in enumerate(raw if isinstance(raw, list) else [])
    ]
    problems: list[FieldProblem] = []
    try:
        Profile.model_validate(data)
    except ValidationError as exc:
        for problem in profile_problems(exc, document):
            if problem.element is not None and problem.element < len(elements):
                elements[problem.element].errors.append(f"{problem.field}: {problem.message}".removeprefix(": "))
                where = f"profileElements[{problem.element}]"
                field = f"{where}.{problem.field}" if problem.field else where
            else:
                field = problem.where if not problem.field else f"{problem.where}.{problem.field}"
            problems.append(FieldProblem(field=field, message=problem.message))
    name, version = data.get("name"), data.get("version")
    return ProfileCheck(
        valid=not problems,
        name=str(name) if name is not None else None,
        version=str(version) if version is not None else None,
        elements=elements,
        errors=problems,
    )


async def _yaml_body(request: Request) -> str:
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ApiProblem(
                422, "send the profile as the form's file field", [FieldProblem(field="file", message="is required")]
            )
        raw = await upload.read()
    else:
        raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiProblem(422, "the profile is not UTF-8 text") from None


def _profiles(document: Document) -> list[dict[str, Any]]:
    items = document.setdefault("profiles", [])
    assert isinstance(items, list)
    return items


def _profile_index(document: Document, name: str) -> int:
    for index, profile in enumerate(_profiles(document)):
        if profile.get("name") == name:
            return index
    raise ApiProblem(404, f"no profile named {name!r}")


def users_of_profile(document: Document, name: str) -> list[str]:
    return [str(p.get("name")) for p in _projects(document) if p.get("profile") == name]


def _checked(text: str) -> ProfileCheck:
    check = check_profile(text)
    if not check.valid:
        raise ApiProblem(422, "Errors occurred in profile elements", check.errors)
    return check


def _summary(document: Document, profile: dict[str, Any]) -> dict[str, Any]:
    check = check_profile(str(profile.get("yaml", "")))
    name = str(profile.get("name"))
    return {
        "name": name,
        "version": check.version,
        "profile_name": check.name,
        "used_by": users_of_profile(document, name),
    }


@router.get("/profiles", tags=["profiles"], summary="List the stored profiles and the projects using each")
def list_profiles(caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    return Listing(revision=number, items=[_summary(document, p) for p in _profiles(document)])


@router.get(
    "/profiles:schema",
    tags=["profiles"],
    summary="The JSON schema of a Karnak profile: its elements, one model per codename, with Karnak's keys",
)
def profile_schema(caller: Reader) -> dict[str, Any]:
    return profile_json_schema()


@router.post(
    "/profiles:validate",
    tags=["profiles"],
    openapi_extra=YAML_BODY,
    summary="Validate a Karnak profile (YAML) without storing it: errors per element",
)
async def validate_profile(request: Request, caller: Reader) -> ProfileCheck:
    return check_profile(await _yaml_body(request))


@router.post(
    "/profiles",
    status_code=201,
    tags=["profiles"],
    openapi_extra=YAML_BODY,
    summary="Upload a Karnak profile (YAML); stored under ?name= or the profile's own name",
)
async def upload_profile(
    request: Request,
    caller: Writer,
    console: ConsoleDep,
    based_on: BasedOn,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> WriteResult:
    return store_profile(await _yaml_body(request), name, caller, console, based_on)


def store_profile(text: str, name: str | None, caller: Caller, console: Console, based_on: int | None) -> WriteResult:
    """Store a new profile (its YAML, checked element by element) under `name` or its own name."""
    check = _checked(text)
    chosen = name or check.name
    if not chosen:
        raise ApiProblem(
            422, "the profile has no name: give ?name=", [FieldProblem(field="name", message="is required")]
        )

    def mutate(document: Document) -> None:
        if any(p.get("name") == chosen for p in _profiles(document)):
            raise ApiProblem(409, f"a profile named {chosen!r} already exists: PUT /profiles/{chosen} replaces it")
        _profiles(document).append({"name": chosen, "yaml": text})

    return console.editor.change(caller, action="create", object=f"profiles/{chosen}", mutate=mutate, based_on=based_on)


@router.get("/profiles/{name}", tags=["profiles"], summary="Get a profile (its YAML and the projects using it)")
def get_profile(name: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    profile = _profiles(document)[_profile_index(document, name)]
    return Item(revision=number, item={**_summary(document, profile), "yaml": profile.get("yaml")})


@router.get(
    "/profiles/{name}/download",
    tags=["profiles"],
    response_class=Response,
    responses={200: {"content": {"application/x-yaml": {}}}},
    summary="Download a profile as its YAML file",
)
def download_profile(name: str, caller: Reader, console: ConsoleDep) -> Response:
    _, document = console.editor.masked()
    profile = _profiles(document)[_profile_index(document, name)]
    filename = re.sub(r"[^A-Za-z0-9._-]", "-", name) + ".yml"
    return Response(
        str(profile.get("yaml", "")),
        media_type="application/x-yaml",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.put("/profiles/{name}", tags=["profiles"], openapi_extra=YAML_BODY, summary="Replace a profile's YAML")
async def replace_profile(
    name: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    text = await _yaml_body(request)
    _checked(text)

    def mutate(document: Document) -> None:
        _profiles(document)[_profile_index(document, name)]["yaml"] = text

    return console.editor.change(caller, action="update", object=f"profiles/{name}", mutate=mutate, based_on=based_on)


@router.delete("/profiles/{name}", tags=["profiles"], summary="Delete a profile no project uses")
def delete_profile(name: str, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    def mutate(document: Document) -> None:
        index = _profile_index(document, name)
        used = users_of_profile(document, name)
        if used:
            raise ApiProblem(409, f"The profile {name} can't be removed: it is used by the projects {', '.join(used)}")
        del _profiles(document)[index]

    return console.editor.change(caller, action="delete", object=f"profiles/{name}", mutate=mutate, based_on=based_on)


# --- auth configs ---------------------------------------------------------------------------------


def _auth_configs(document: Document) -> list[dict[str, Any]]:
    items = document.setdefault("auth_configs", [])
    assert isinstance(items, list)
    return items


def _auth_index(document: Document, code: str) -> int:
    for index, item in enumerate(_auth_configs(document)):
        if item.get("code") == code:
            return index
    raise ApiProblem(404, f"no auth config with code {code!r}")


def users_of_auth_config(document: Document, code: str) -> list[str]:
    found = []
    for node in document.get("forward_nodes", []):
        for dest in node.get("destinations", []):
            deid = dest.get("deidentification")
            pseudonym = deid.get("pseudonym") if isinstance(deid, dict) else None
            if isinstance(pseudonym, dict) and pseudonym.get("auth_config") == code:
                found.append(f"{node.get('ae_title')}/{dest.get('id')}")
    return found


@router.get("/auth-configs", tags=["auth configs"], summary="List the OAuth2 client credentials (secrets masked)")
def list_auth_configs(caller: Reader, console: ConsoleDep) -> Listing:
    number, document = console.editor.masked()
    return Listing(revision=number, items=_auth_configs(document))


@router.post(
    "/auth-configs",
    status_code=201,
    tags=["auth configs"],
    openapi_extra=AUTH_CONFIG_BODY,
    summary="Add an auth config",
)
async def create_auth_config(request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    return add_auth_config(await json_object(request), caller, console, based_on)


def add_auth_config(body: dict[str, Any], caller: Caller, console: Console, based_on: int | None) -> WriteResult:
    code = str(body.get("code", ""))

    def mutate(document: Document) -> None:
        if any(a.get("code") == code for a in _auth_configs(document)):
            raise ApiProblem(
                409,
                "This identifier already exists",
                [FieldProblem(field="code", message="This identifier already exists")],
            )
        _auth_configs(document).append(body)

    return console.editor.change(
        caller, action="create", object=f"auth-configs/{code}", mutate=mutate, based_on=based_on
    )


@router.get("/auth-configs/{code}", tags=["auth configs"], summary="Get an auth config (secret masked)")
def get_auth_config(code: str, caller: Reader, console: ConsoleDep) -> Item:
    number, document = console.editor.masked()
    return Item(revision=number, item=_auth_configs(document)[_auth_index(document, code)])


@router.put(
    "/auth-configs/{code}",
    tags=["auth configs"],
    openapi_extra=AUTH_CONFIG_BODY,
    summary="Edit an auth config (no client_secret, or the masked one, keeps it)",
)
async def replace_auth_config(
    code: str, request: Request, caller: Writer, console: ConsoleDep, based_on: BasedOn
) -> WriteResult:
    return update_auth_config(code, await json_object(request), caller, console, based_on)


def update_auth_config(
    code: str, body: dict[str, Any], caller: Caller, console: Console, based_on: int | None
) -> WriteResult:
    """Replace an auth config; a secret left out (or sent back masked) keeps the stored one."""

    def mutate(document: Document) -> None:
        index = _auth_index(document, code)
        if body.get("client_secret") in (None, "") or is_masked(body.get("client_secret")):
            body["client_secret"] = _auth_configs(document)[index].get("client_secret")
        _auth_configs(document)[index] = body

    return console.editor.change(
        caller, action="update", object=f"auth-configs/{code}", mutate=mutate, based_on=based_on
    )


@router.delete("/auth-configs/{code}", tags=["auth configs"], summary="Delete an auth config no destination uses")
def delete_auth_config(code: str, caller: Writer, console: ConsoleDep, based_on: BasedOn) -> WriteResult:
    def mutate(document: Document) -> None:
        index = _auth_index(document, code)
        used = users_of_auth_config(document, code)
        if used:
            raise ApiProblem(409, f"auth config {code!r} is used by the destinations {', '.join(used)}")
        del _auth_configs(document)[index]

    return console.editor.change(
        caller, action="delete", object=f"auth-configs/{code}", mutate=mutate, based_on=based_on
    )
