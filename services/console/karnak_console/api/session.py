"""Signing in: password logins (API and the login page), OpenID Connect, the current session, signing out.

Failed logins are rate-limited per client address and per account name (`console.login_attempts_per_minute`);
the 429 says when to try again. The login page carries its own CSRF token (an anonymous session), so no
other site can sign a browser into an account of its choosing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from karnak_console.accounts import AccountError, Principal
from karnak_console.api.common import ConsoleDep, StatusReader
from karnak_console.context import Console
from karnak_console.problems import ApiProblem
from karnak_console.roles import highest_role
from karnak_console.security import client_address, end_session, start_session

router = APIRouter()


class SessionInfo(BaseModel):
    user: str
    role: str
    kind: str
    # Send it as X-CSRF-Token with every write made with the session cookie.
    csrf_token: str | None = None


def password_login(console: Console, request: Request, username: str, password: str) -> Principal:
    keys = (f"address:{client_address(request)}", f"account:{username.lower()}")
    wait = console.throttle.retry_after(*keys)
    if wait:
        raise ApiProblem(429, f"too many failed logins: try again in {wait} s", headers={"Retry-After": str(wait)})
    principal = console.accounts.verify_password(username, password) if username and password else None
    if principal is None:
        console.throttle.failed(*keys)
        raise ApiProblem(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"})
    console.throttle.succeeded(*keys)
    return principal


@router.post(
    "/api/v1/session",
    tags=["session"],
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                        "required": ["username", "password"],
                    }
                }
            }
        },
        "x-permission": "public",
    },
    summary="Sign in with a user name and password (sets the session cookie)",
)
async def login(request: Request, console: ConsoleDep) -> SessionInfo:
    try:
        body: Any = await request.json()
    except ValueError:
        body = None
    username = body.get("username") if isinstance(body, dict) else None
    password = body.get("password") if isinstance(body, dict) else None
    principal = password_login(
        console, request, username if isinstance(username, str) else "", password if isinstance(password, str) else ""
    )
    csrf = start_session(request, principal)
    return SessionInfo(user=principal.name, role=principal.role, kind="user", csrf_token=csrf)


@router.get("/api/v1/session", tags=["session"], summary="Who is signed in")
def whoami(caller: StatusReader, request: Request) -> SessionInfo:
    csrf = request.session.get("csrf") if caller.origin == "console" else None
    return SessionInfo(
        user=caller.principal.name,
        role=caller.principal.role,
        kind=caller.principal.kind,
        csrf_token=csrf if isinstance(csrf, str) else None,
    )


@router.delete("/api/v1/session", tags=["session"], status_code=204, summary="Sign out (ends the session cookie)")
def logout(caller: StatusReader, request: Request) -> Response:
    end_session(request)
    return Response(status_code=204)


# --- OpenID Connect -------------------------------------------------------------------------------


def claim_at(claims: dict[str, Any], path: str) -> list[str]:
    """The role names at a dotted claim path (`resource_access.karnak.roles`): a list or a single string."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return []
        value = value[part]
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _oidc_client(request: Request) -> Any:
    client = getattr(request.app.state, "oidc", None)
    if client is None:
        raise ApiProblem(404, "OpenID Connect is not configured (console.oidc)")
    return client


OidcClient = Annotated[Any, Depends(_oidc_client)]


@router.get("/auth/oidc/login", include_in_schema=False)
async def oidc_login(request: Request, client: OidcClient, console: ConsoleDep) -> Response:
    base = str(console.settings.console.public_url or request.base_url).rstrip("/")
    response: Response = await client.authorize_redirect(request, f"{base}/auth/oidc/callback")
    return response


@router.get("/auth/oidc/callback", include_in_schema=False)
async def oidc_callback(request: Request, client: OidcClient, console: ConsoleDep) -> Response:
    from authlib.integrations.base_client.errors import OAuthError

    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        raise ApiProblem(401, f"the OpenID provider did not sign you in: {exc.error}") from None
    claims = dict(token.get("userinfo") or {})
    settings = console.settings.console.oidc
    assert settings is not None
    if not claim_at(claims, settings.roles_claim):
        try:
            claims.update(await client.userinfo(token=token))
        except OAuthError:
            pass
    role = highest_role(claim_at(claims, settings.roles_claim))
    if role is None:
        raise ApiProblem(
            403, f"your account has no console role in the claim {settings.roles_claim} (admin, operator or viewer)"
        )
    subject = str(claims.get("preferred_username") or claims.get("email") or claims.get("sub") or "")
    if not subject:
        raise ApiProblem(401, "the OpenID provider named no user (no sub claim)")
    try:
        principal = console.accounts.oidc_login(subject, role)
    except AccountError as exc:
        raise ApiProblem(403, str(exc)) from None
    start_session(request, principal)
    return RedirectResponse("/", status_code=303)
