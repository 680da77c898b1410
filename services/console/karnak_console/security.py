"""One authentication and CSRF layer for the API and the pages (DESIGN.md section 15).

- `Authorization: Bearer kn_...` (API tokens): no cookie, no CSRF (a browser never sends it by itself).
- The session cookie (Starlette's signed, HttpOnly, SameSite=Lax cookie, re-signed on each response, so
  `max_age` is an idle timeout): writes must carry the session's CSRF token (`X-CSRF-Token` header, or a
  `csrf_token` form field for plain HTML forms).
- `Guard(permission)` is the dependency every route declares; `create_app` copies each route's permission
  into its OpenAPI operation (`x-permission`), which the tests walk.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from karnak_console.accounts import AccountStore, Principal
from karnak_console.audit import Origin
from karnak_console.roles import Permission, allows

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
SESSION_COOKIE = "karnak_session"
# A browser session ends after this long even when it stays busy.
SESSION_MAX_SECONDS = 12 * 3600

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of a request and how it came (which decides the audit's origin)."""

    principal: Principal
    origin: Origin
    client: str

    @property
    def actor(self) -> str:
        return self.principal.label


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def start_session(request: Request, principal: Principal) -> str:
    """Sign a person in on this browser; returns the session's CSRF token."""
    request.session.clear()
    csrf = secrets.token_urlsafe(32)
    request.session.update({"user": principal.name, "csrf": csrf, "since": int(time.time())})
    return csrf


def end_session(request: Request) -> None:
    request.session.clear()


class Authenticator:
    """Finds who calls: a bearer token, else a browser session whose account still exists."""

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts

    async def caller(self, request: Request) -> Caller | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise HTTPException(401, "use Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
            principal = self.accounts.verify_token(value)
            if principal is None:
                raise HTTPException(401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
            return Caller(principal, "api", client_address(request))
        session = request.session
        name = session.get("user")
        if not isinstance(name, str):
            return None
        since = session.get("since")
        if not isinstance(since, int) or time.time() - since > SESSION_MAX_SECONDS:
            session.clear()
            return None
        user = self.accounts.user(name)
        if user is None:
            session.clear()
            return None
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, session.get("csrf"))
        return Caller(Principal(user.name, user.role, "user"), "console", client_address(request))


async def _check_csrf(request: Request, expected: object) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        field = form.get("csrf_token")
        given = field if isinstance(field, str) else None
    if not isinstance(expected, str) or given is None or not secrets.compare_digest(given, expected):
        raise HTTPException(403, f"missing or wrong CSRF token: send the session's token in {CSRF_HEADER}")


class Guard:
    """The dependency of a route: the caller, if signed in and allowed `permission`; 401/403 otherwise."""

    def __init__(self, permission: Permission) -> None:
        self.permission = permission

    async def __call__(self, request: Request) -> Caller:
        authenticator: Authenticator = request.app.state.authenticator
        caller = await authenticator.caller(request)
        if caller is None:
            raise HTTPException(401, "sign in or send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
        if not allows(caller.principal.role, self.permission):
            raise HTTPException(
                403, f"the {caller.principal.role} role may not do this (it needs the {self.permission} permission)"
            )
        return caller


class LoginThrottle:
    """At most `per_minute` failed logins per client address and per account name in any minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures[key]
        while times and now - times[0] > 60:
            times.popleft()
        return times

    def retry_after(self, *keys: str) -> int:
        """Seconds to wait before trying again (0: may try now)."""
        now = time.monotonic()
        with self._lock:
            waits = [
                int(61 - (now - times[0]))
                for times in (self._recent(key, now) for key in keys)
                if len(times) >= self.per_minute
            ]
        return max(waits, default=0)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


class SecurityHeaders(BaseHTTPMiddleware):
    """Headers on every response: CSP without inline script, no framing, no sniffing, no caching of the API."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app)

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        headers = response.headers
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if request.url.path.startswith(("/api/v1", "/auth")):
            headers["Cache-Control"] = "no-store"
        return response
