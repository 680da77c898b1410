"""The console's web pages (DESIGN.md section 15): server-rendered Jinja2, htmx for partial updates.

Each module of this package with a `router` (an `APIRouter`) is one group of pages; `create_app` includes
every such module it finds, so a new group of pages is a new module and a folder of templates, nothing
else (docs/console-pages.md says how). What they share lives here:

- `PageGuard(permission)`: who is signed in (the API's one `Authenticator`, so the same session cookie,
  tokens and CSRF check); a browser that is not signed in is sent to the login page, a role that may not
  is answered with the "Not authorized" page, a forged write (no or a wrong CSRF token) likewise.
- `render`: a page with the layout's context: the role-filtered navigation, the CSRF token, the caller.
- `FormErrors`: the API's own field errors (`ApiProblem`, pydantic's `ValidationError`) keyed by the
  form's field names, which the `macros/forms.html` macros show next to their field.
- `FormReader`: a submitted form read into the JSON body the API takes (the configuration's field names),
  so the pages validate with the API's models and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from karnak_console.problems import ApiProblem, FieldProblem, problem_response, validation_problems
from karnak_console.roles import Permission, allows
from karnak_console.security import Authenticator, Caller
from karnak_shared.config import ROUTING_KEYS

CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class NavEntry:
    label: str
    path: str
    permission: Permission


# Every page of the console, in menu order; an entry shows only to the roles that may open its page.
NAVIGATION: tuple[NavEntry, ...] = (
    NavEntry("Gateway", "/gateway", Permission.READ_CONFIG),
    NavEntry("Projects", "/projects", Permission.READ_CONFIG),
    NavEntry("Profiles", "/profiles", Permission.READ_CONFIG),
    NavEntry("Pseudonyms", "/pseudonyms", Permission.PSEUDONYMS),
    NavEntry("Auth configs", "/auth-configs", Permission.READ_CONFIG),
    NavEntry("Monitoring", "/monitoring", Permission.STATUS),
    NavEntry("Services", "/services", Permission.STATUS),
    NavEntry("Configuration history", "/history", Permission.READ_CONFIG),
    NavEntry("Dead letters", "/dead-letters", Permission.OPERATE),
    NavEntry("Audit", "/audit", Permission.AUDIT),
    NavEntry("API", "/api/docs", Permission.STATUS),
)


def navigation(caller: Caller) -> list[NavEntry]:
    return [entry for entry in NAVIGATION if allows(caller.principal.role, entry.permission)]


def first_page(caller: Caller) -> str:
    """Where `/` sends someone: the first page of the menu their role may open."""
    entries = navigation(caller)
    return entries[0].path if entries else "/api/docs"


# --- who may see a page ---------------------------------------------------------------------------


class SignInFirst(Exception):
    """A page asked for by a browser that is not signed in: answered with a redirect to the login page."""

    def __init__(self, wanted: str) -> None:
        super().__init__(wanted)
        self.wanted = wanted


class PageRefused(Exception):
    """A page or a form post refused (no permission, a forged or stale form): the "Not authorized" page."""

    def __init__(self, status: int, message: str, caller: Caller | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.caller = caller


class PageGuard:
    """The dependency of a page: the signed-in caller allowed `permission` (CSRF checked on writes)."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Caller:
        authenticator: Authenticator = request.app.state.authenticator
        try:
            caller = await authenticator.caller(request)
        except HTTPException as exc:
            # A wrong token or a forged write (no or a wrong CSRF token): nothing is done.
            raise PageRefused(exc.status_code, str(exc.detail)) from None
        if caller is None:
            if request.method == "GET":
                raise SignInFirst(request.url.path)
            raise PageRefused(401, "you are not signed in (or your session ended): sign in and try again")
        if not allows(caller.principal.role, self.permission):
            raise PageRefused(
                403,
                f"the {caller.principal.role} role may not do this (it needs the {self.permission} permission)",
                caller,
            )
        return caller


PageReader = Annotated[Caller, Depends(PageGuard(Permission.READ_CONFIG))]
PageWriter = Annotated[Caller, Depends(PageGuard(Permission.WRITE_CONFIG))]
PageOperator = Annotated[Caller, Depends(PageGuard(Permission.OPERATE))]
PagePseudonymKeeper = Annotated[Caller, Depends(PageGuard(Permission.PSEUDONYMS))]
PageStatusReader = Annotated[Caller, Depends(PageGuard(Permission.STATUS))]
PageAuditor = Annotated[Caller, Depends(PageGuard(Permission.AUDIT))]


def page_router() -> APIRouter:
    """The router of a page module: its routes are not part of the API's OpenAPI document."""
    return APIRouter(include_in_schema=False)


# --- rendering ------------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    return token if isinstance(token, str) else ""


def is_htmx(request: Request) -> bool:
    """Whether htmx asked (it then swaps the fragment a handler returns into the page)."""
    return request.headers.get("hx-request") == "true"


def render(request: Request, template: str, caller: Caller | None, *, status: int = 200, **values: Any) -> HTMLResponse:
    """`template` with the layout's context: the caller, their permissions, the menu, the CSRF token."""
    context: dict[str, Any] = {
        "caller": caller,
        "allowed": {str(p) for p in Permission if caller is not None and allows(caller.principal.role, p)},
        "navigation": navigation(caller) if caller is not None else [],
        "current_path": request.url.path,
        "csrf_token": csrf_token(request),
        "errors": FormErrors(),
        "status_code": status,
    }
    context.update(values)
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(request, template, context, status_code=status)
    return response


def see_other(url: str) -> Response:
    """After a successful post: the next page (htmx follows `HX-Redirect`, a plain form the 303)."""
    response = RedirectResponse(url, status_code=303)
    response.headers["HX-Redirect"] = url
    return response


async def sign_in_first(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInFirst)
    if request.headers.get("HX-Request") == "true":
        # A polled fragment whose session ended: the whole page goes to the login page (htmx follows
        # HX-Redirect), rather than the login page being swapped into a table cell.
        return Response(status_code=401, headers={"HX-Redirect": "/login"})
    return RedirectResponse("/login", status_code=303)


async def refused_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PageRefused)
    return render(request, "errors/refused.html", exc.caller, status=exc.status, message=exc.message)


async def problem_page(request: Request, exc: Exception) -> Response:
    """An `ApiProblem` raised while answering a page (no such forward node, ...): a page saying it;
    the API's answers stay the JSON problems of `problems.problem_response`."""
    assert isinstance(exc, ApiProblem)
    if request.url.path.startswith(("/api/", "/auth/")) or request.url.path == "/api":
        return await problem_response(request, exc)
    caller = None
    try:
        caller = await request.app.state.authenticator.caller(request)
    except HTTPException:
        pass
    return render(request, "errors/refused.html", caller, status=exc.status, message=exc.detail)


def routers() -> Iterator[APIRouter]:
    """The `router` of every module of this package, in name order."""
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        loaded = importlib.import_module(f"{__name__}.{module.name}")
        router = getattr(loaded, "router", None)
        if isinstance(router, APIRouter):
            yield router


# --- form errors ----------------------------------------------------------------------------------


@dataclass
class FormErrors:
    """Messages by form field name (the configuration's path below the edited object), and the others."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)
    summary: str = ""

    def __bool__(self) -> bool:
        return bool(self.fields or self.general or self.summary)

    def get(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def add(self, name: str, message: str) -> None:
        if name:
            self.fields.setdefault(name, []).append(message)
        else:
            self.general.append(message)

    @classmethod
    def of(cls, problems: Iterable[FieldProblem], under: str = "", summary: str = "") -> FormErrors:
        """Problems keyed below `under` (`forward_nodes[0].destinations[2]`): `port`, `notifications.emails`.

        A problem at another path of the configuration goes to `general`; one named by a field of the
        request body (`id`, as the API names a duplicate) keeps its name.
        """
        errors = cls(summary=summary)
        for problem in problems:
            name = problem.field
            if under:
                if name == under:
                    name = ""
                elif name.startswith(under + ".") or name.startswith(under + "["):
                    name = name[len(under) :].lstrip(".")
                elif name.split("[", 1)[0].split(".", 1)[0] in ROUTING_KEYS:
                    # A path elsewhere in the configuration (a cross-reference): said above the form.
                    errors.general.append(f"{problem.field}: {problem.message}")
                    continue
                # Otherwise a field of the request body itself (the API names those by their own name).
            errors.add(name, problem.message)
        return errors

    @classmethod
    def from_problem(cls, problem: ApiProblem, under: str = "") -> FormErrors:
        found = cls.of(problem.errors, under, summary=problem.detail)
        return found

    @classmethod
    def from_validation(cls, error: ValidationError, under: str = "") -> FormErrors:
        return cls.of(validation_problems(error.errors()), under, summary="the form has errors")


# --- reading forms --------------------------------------------------------------------------------

_INTEGER = re.compile(r"^[+-]?\d+$")


class FormReader:
    """A submitted form read as the API's JSON body: typed where the text says so, left as typed otherwise
    (the model then names what is wrong, as it does for the API)."""

    def __init__(self, form: FormData) -> None:
        self.form = form

    def text(self, name: str) -> str | None:
        """The field's text without surrounding blanks; None when empty or absent."""
        value = self.form.get(name)
        if not isinstance(value, str):
            return None
        value = value.strip()
        return value or None

    def raw(self, name: str) -> str:
        """The field's text as typed (a text area's lines kept); empty when absent."""
        value = self.form.get(name)
        return value if isinstance(value, str) else ""

    def integer(self, name: str) -> int | str | None:
        value = self.text(name)
        if value is not None and _INTEGER.match(value):
            return int(value)
        return value

    def number(self, name: str) -> float | str | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            return value

    def checked(self, name: str) -> bool:
        """A checkbox: present (any value but "false") means checked."""
        value = self.form.get(name)
        return isinstance(value, str) and value.lower() not in ("", "false", "off", "0")

    def values(self, name: str) -> list[str]:
        """Every value of a repeated field (a multiple select, checkboxes of one name), blanks dropped."""
        return [v.strip() for v in self.form.getlist(name) if isinstance(v, str) and v.strip()]

    def items(self, name: str) -> list[str]:
        """A comma- or line-separated list field."""
        return [part.strip() for part in re.split(r"[,\n]", self.raw(name)) if part.strip()]


def field_id(name: str) -> str:
    """The HTML id of a form field (`notifications.emails` -> `f-notifications-emails`)."""
    return "f-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
