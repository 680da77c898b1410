"""The console's FastAPI application: the API under /api/v1, its docs, the pages, the ops endpoints.

One authentication layer (`security.Guard`) serves the API and the pages; every route that is not a
probe or the login names the permission it needs, and that permission is published in the OpenAPI
document as `x-permission`, which the tests walk route by route and role by role.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from karnak_console import pages
from karnak_console.api import accounts, configuration, monitoring, operations, projects, routing, session
from karnak_console.api.common import BODY_SCHEMAS
from karnak_console.context import Console
from karnak_console.problems import ApiProblem, http_response, validation_response
from karnak_console.roles import Permission
from karnak_console.security import SESSION_COOKIE, Guard, SecurityHeaders

HERE = Path(__file__).parent
OPENAPI_URL = "/api/v1/openapi.json"
# Routes anyone may call: the ops endpoints of every service (probes, Prometheus) and the ways to sign in.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/api/v1/session"})

REQUESTS = Counter(
    "karnak_console_requests_total", "Requests the console answered, by method and status class", ["method", "status"]
)

SignedIn = Depends(Guard(Permission.STATUS))


def create_app(console: Console) -> FastAPI:
    settings = console.settings.console
    app = FastAPI(
        title="Karnak console API",
        version="1",
        description=(
            "Configure and operate the Karnak gateway. Every write stores one configuration revision "
            "(the response names it); send `Authorization: Bearer <token>` (karnak tokens create)."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = console
    app.state.authenticator = console.authenticator
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.state.templates.env.globals["field_id"] = pages.field_id
    app.add_middleware(
        SessionMiddleware,
        secret_key=console.session_key,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_idle_minutes * 60,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(ApiProblem, pages.problem_page)
    app.add_exception_handler(RequestValidationError, validation_response)
    app.add_exception_handler(StarletteHTTPException, http_response)
    app.add_exception_handler(pages.SignInFirst, pages.sign_in_first)
    app.add_exception_handler(pages.PageRefused, pages.refused_page)
    for module in (routing, projects, configuration, operations, monitoring, accounts, session):
        _publish_permissions(module.router.routes)
        app.include_router(module.router)
    for page_router in pages.routers():
        app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _add_docs(app)
    _add_ops(app, console)
    _publish_permissions(app.router.routes)
    if settings.oidc is not None:
        app.state.oidc = _oidc_client(console)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        REQUESTS.labels(method=request.method, status=f"{response.status_code // 100}xx").inc()
        return response

    return app


def _oidc_client(console: Console) -> Any:
    from authlib.integrations.starlette_client import OAuth

    oidc = console.settings.console.oidc
    assert oidc is not None
    oauth = OAuth()
    oauth.register(
        name="karnak",
        client_id=oidc.client_id,
        client_secret=oidc.client_secret.get_secret_value(),
        server_metadata_url=oidc.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": oidc.scope, "code_challenge_method": "S256"},
    )
    return oauth.create_client("karnak")


def _add_docs(app: FastAPI) -> None:
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/api/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=[SignedIn])
    def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/api/docs", include_in_schema=False, dependencies=[SignedIn])
    def docs() -> HTMLResponse:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Karnak console API</title>"
            "<link rel='stylesheet' href='/api/docs/assets/swagger-ui.css'></head><body>"
            "<div id='swagger-ui'></div><script src='/api/docs/assets/swagger-ui-bundle.js'></script>"
            "<script src='/static/swagger-init.js'></script></body></html>"
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(BODY_SCHEMAS)
            schema["components"]["securitySchemes"] = {
                "token": {"type": "http", "scheme": "bearer", "description": "karnak tokens create NAME --role ROLE"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            }
            schema["security"] = [{"token": []}, {"session": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_ops(app: FastAPI, console: Console) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        failing = []
        try:
            with console.accounts.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any driver error means the database cannot be used
            failing.append("database")
        if failing:
            return PlainTextResponse("not ready: " + ", ".join(failing) + "\n", status_code=503)
        return PlainTextResponse("ready\n")

    # Open like every service's /metrics (Prometheus scrapes it): request counts, no secret, no patient data.
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _publish_permissions(routes: list[Any]) -> None:
    """Copy each route's Guard permission into its OpenAPI operation as `x-permission`."""
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        found = [d.call.permission for d in route.dependant.dependencies if isinstance(d.call, Guard)]
        found += [
            d.call.permission
            for dep in route.dependant.dependencies
            for d in dep.dependencies
            if isinstance(d.call, Guard)
        ]
        extra = dict(route.openapi_extra or {})
        if found:
            extra["x-permission"] = str(found[0])
        elif route.path not in PUBLIC_PATHS:
            raise RuntimeError(f"route {route.methods} {route.path} names no permission (Guard)")
        route.openapi_extra = extra
