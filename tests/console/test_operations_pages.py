"""The operations pages' guards, route by route: who may open each page and who may post to each form.

The browser tests (tests/console/browser) show the pages at work; these walk every route of the page
modules in-process, so a new route cannot forget its guard.
"""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from karnak_console.pages import operations, projects, pseudonyms

from tests.console.conftest import ConsoleUnderTest

PASSWORDS = {"admin": "admin-password-1", "operator": "operator-password-1", "viewer": "viewer-password-1"}
MODULES = (projects, pseudonyms, operations)
# The pages a viewer may open (read-config, status); the others need the operator's or the admin's role.
READABLE_BY_VIEWER = {"projects", "profiles", "auth-configs", "history", "services"}


def sign_in(app: ConsoleUnderTest, role: str) -> str:
    """Log in through the login form as `role`; returns the session's CSRF token."""
    app.client.cookies.clear()
    name = f"page-{role}"
    if app.console.accounts.user(name) is None:
        app.console.accounts.add_user(name, role, PASSWORDS[role])
    login = app.client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert token is not None
    answer = app.client.post(
        "/login",
        data={"csrf_token": token.group(1), "username": name, "password": PASSWORDS[role]},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    session = app.client.get("/api/v1/session").json()
    return str(session["csrf_token"])


def page_routes(method: str) -> list[str]:
    found = []
    for module in MODULES:
        for route in module.router.routes:
            if isinstance(route, APIRoute) and method in route.methods:
                found.append(re.sub(r"\{[^}]+\}", "x", route.path))
    return found


@pytest.mark.parametrize("path", page_routes("POST"))
def test_a_viewer_posting_to_any_operations_form_is_refused_with_a_valid_csrf_token(
    app: ConsoleUnderTest, path: str
) -> None:
    token = sign_in(app, "viewer")
    answer = app.client.post(path, data={"csrf_token": token})
    assert answer.status_code == 403, (path, answer.text[:300])
    assert "the viewer role may not do this" in answer.text


@pytest.mark.parametrize("path", page_routes("POST"))
def test_a_post_without_the_csrf_token_is_refused_before_its_role_is_considered(
    app: ConsoleUnderTest, path: str
) -> None:
    sign_in(app, "admin")
    answer = app.client.post(path, data={"csrf_token": "forged"})
    assert answer.status_code == 403 and "CSRF" in answer.text, path


@pytest.mark.parametrize("path", [p for p in page_routes("GET") if "{" not in p and p.count("/") == 1])
def test_a_viewer_opens_the_read_only_pages_and_is_refused_the_others(app: ConsoleUnderTest, path: str) -> None:
    sign_in(app, "viewer")
    answer = app.client.get(path)
    expected = 200 if path.strip("/") in READABLE_BY_VIEWER else 403
    assert answer.status_code == expected, (path, answer.text[:300])
    if expected == 200:
        assert '<form method="post"' not in answer.text.split("</header>", 1)[1], path


def test_every_form_control_of_the_pages_has_a_visible_label(app: ConsoleUnderTest) -> None:
    sign_in(app, "admin")
    for path in ("/projects", "/profiles", "/auth-configs", "/history", "/audit", "/services"):
        html = app.client.get(path).text
        ids = set(re.findall(r'<label for="([^"]+)"', html))
        for control in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
            if 'type="hidden"' in control:
                continue
            found = re.search(r'id="([^"]+)"', control)
            assert found is not None and found.group(1) in ids, (path, control)


@pytest.mark.parametrize(
    "path", ["/projects/nothing-here", "/profiles/nothing-here", "/auth-configs/none", "/history/999"]
)
def test_a_page_of_something_missing_says_so_in_the_layout(app: ConsoleUnderTest, path: str) -> None:
    sign_in(app, "viewer")
    answer = app.client.get(path)
    assert answer.status_code == 404
    assert "<h1>Not found</h1>" in answer.text and 'aria-label="Main"' in answer.text
