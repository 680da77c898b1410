"""Every route of the OpenAPI document against every role: 401 without credentials, 403 for a role that may not.

The permission each route needs is the one its Guard declares, published as `x-permission`; the grants
are DESIGN.md section 15's roles. A route that forgets its Guard makes `create_app` fail, and a route that
lets a role through that it should not is caught here.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from karnak_console.roles import GRANTS, ROLES, Permission

from tests.console.conftest import ConsoleUnderTest

METHODS = ("get", "post", "put", "delete", "patch")


def operations(app: ConsoleUnderTest) -> list[tuple[str, str, dict[str, Any]]]:
    document = app.client.app.openapi()  # type: ignore[attr-defined]
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "KARNAK-GW", path)


def call(app: ConsoleUnderTest, method: str, path: str, headers: dict[str, str]) -> int:
    response = app.client.request(
        method, concrete(path), headers={**headers, "content-type": "application/json"}, content=b"{}"
    )
    return response.status_code


def test_every_operation_names_a_permission_of_the_design(app: ConsoleUnderTest) -> None:
    known = {str(p) for p in Permission} | {"public"}
    found = {(m, p): op.get("x-permission") for m, p, op in operations(app)}
    assert found, "the OpenAPI document lists no operation"
    assert {k: v for k, v in found.items() if v not in known} == {}


def test_without_credentials_every_route_answers_401_except_the_login(app: ConsoleUnderTest) -> None:
    wrong = {}
    for method, path, operation in operations(app):
        if operation.get("x-permission") == "public":
            continue
        status = call(app, method, path, {})
        if status != 401:
            wrong[f"{method} {path}"] = status
    assert wrong == {}
    # The ops endpoints stay open as on every service (probes, Prometheus): they say nothing of the gateway.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert app.client.get(path).status_code == 200, path
    for path in ("/api/v1/openapi.json", "/api/docs"):
        assert app.client.get(path).status_code == 401, path
    assert app.client.get("/").url.path == "/login"


def test_a_revoked_or_made_up_token_answers_401(app: ConsoleUnderTest) -> None:
    app.console.accounts.revoke_token("test-admin")
    assert app.get("/api/v1/forward-nodes").status_code == 401
    made_up = {"Authorization": "Bearer kn_0123456789abcdef_" + "A" * 43}
    assert app.client.get("/api/v1/forward-nodes", headers=made_up).status_code == 401


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_403_exactly_where_it_lacks_the_permission(app: ConsoleUnderTest, role: str) -> None:
    refused, allowed_but_refused = {}, {}
    for method, path, operation in operations(app):
        permission = operation.get("x-permission")
        if permission == "public":
            continue
        status = call(app, method, path, app.as_(role))
        may = Permission(permission) in GRANTS[role]  # type: ignore[index]
        if not may and status != 403:
            refused[f"{method} {path}"] = status
        if may and status in (401, 403):
            allowed_but_refused[f"{method} {path}"] = status
    assert refused == {}, f"{role} was not refused"
    assert allowed_but_refused == {}, f"{role} was refused where it may"


# POSTs and DELETEs that change nothing of the gateway: checking a profile, signing out.
NOT_WRITES = {("POST", "/api/v1/profiles:validate"), ("DELETE", "/api/v1/session")}


def test_a_viewer_may_write_nothing(app: ConsoleUnderTest) -> None:
    writes = [
        (m, p)
        for m, p, op in operations(app)
        if m != "GET" and op.get("x-permission") != "public" and (m, p) not in NOT_WRITES
    ]
    answers = {f"{m} {p}": call(app, m, p, app.as_("viewer")) for m, p in writes}
    assert writes and set(answers.values()) == {403}, answers
