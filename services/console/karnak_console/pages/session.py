"""Signing in and out in a browser: the login page (password, and the OpenID provider's button), logout.

The login form carries its own CSRF token (an anonymous session), so no other site can sign a browser
into an account of its choosing; the logout form carries the session's. Password checks and their rate
limit are the API's (`api.session`).
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from karnak_console.api.common import ConsoleDep
from karnak_console.api.session import password_login
from karnak_console.pages import CSRF_FIELD, PageStatusReader, first_page, page_router, render
from karnak_console.problems import ApiProblem
from karnak_console.security import end_session, start_session

router = page_router()

LOGIN_MESSAGES = {
    "wrong": "Wrong user name or password.",
    "throttled": "Too many failed logins: wait a minute and try again.",
    "expired": "The login form expired: try again.",
}


@router.get("/login")
def login_page(request: Request, console: ConsoleDep, error: str | None = None, signed_out: bool = False) -> Response:
    token = request.session.get("login_csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["login_csrf"] = token
    oidc = console.settings.console.oidc
    return render(
        request,
        "session/login.html",
        None,
        login_csrf=token,
        message=LOGIN_MESSAGES.get(error or ""),
        signed_out=signed_out,
        oidc_label=oidc.label if oidc else None,
    )


@router.post("/login")
async def login_form(request: Request, console: ConsoleDep) -> Response:
    form = await request.form()
    expected = request.session.get("login_csrf")
    given = form.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(given, str) or not secrets.compare_digest(expected, given):
        return RedirectResponse("/login?error=expired", status_code=303)
    username, password = form.get("username"), form.get("password")
    try:
        principal = password_login(
            console,
            request,
            username if isinstance(username, str) else "",
            password if isinstance(password, str) else "",
        )
    except ApiProblem as exc:
        return RedirectResponse("/login?error=" + ("throttled" if exc.status == 429 else "wrong"), status_code=303)
    start_session(request, principal)
    return RedirectResponse("/", status_code=303)


@router.get("/")
async def start_page(request: Request, console: ConsoleDep) -> Response:
    caller = await console.authenticator.caller(request)
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return RedirectResponse(first_page(caller), status_code=303)


@router.get("/logout")
def logout_page(request: Request, caller: PageStatusReader) -> HTMLResponse:
    """A confirmation with the logout button: a GET never signs out (a link on another site could)."""
    return render(request, "session/logout.html", caller)


@router.post("/logout")
async def logout_form(request: Request, caller: PageStatusReader) -> Response:
    end_session(request)
    return RedirectResponse("/login?signed_out=true", status_code=303)
