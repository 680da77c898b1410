"""OpenID Connect login against a real OpenID provider (the npm package oidc-provider, run with Node).

The provider's development login form accepts any user; the roles come from the claim path the console is
configured with (Keycloak's resource_access.karnak.roles here). The test drives the browser's part: the
redirect to the provider, its login and consent forms, and the redirect back with the code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.console.conftest import ConsoleUnderTest, start_console, write_config
from tests.support.servers import free_port, wait_for_port

PROVIDER = Path(__file__).parents[1] / "support" / "oidc"
CALLBACK = "http://testserver/auth/oidc/callback"


@pytest.fixture
def provider() -> Iterator[str]:
    node = shutil.which("node")
    if node is None or not (PROVIDER / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            f"the OpenID provider needs Node and `npm install` in {PROVIDER} (.ci/run does both)", pytrace=False
        )
    port = free_port()
    env = {**os.environ, "ROLES_ALICE": "admin,viewer", "ROLES_VICTOR": "viewer", "ROLES_NOBODY": ""}
    process = subprocess.Popen(
        [node, str(PROVIDER / "provider.mjs"), str(port), "karnak", "provider-secret", CALLBACK],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def oidc_app(provider: str, tmp_path: Path) -> Iterator[ConsoleUnderTest]:
    oidc = {
        "issuer": provider,
        "client_id": "karnak",
        "client_secret": "provider-secret",
        "roles_claim": "resource_access.karnak.roles",
    }
    path = write_config(
        tmp_path / "karnak.yml",
        console={"public_url": "http://testserver", "oidc": oidc, "admin_password_file": str(tmp_path / "pw")},
    )
    running = start_console(path)
    yield running
    running.client.close()


def sign_in_at_the_provider(app: ConsoleUnderTest, user: str) -> httpx.Response:
    """Follow the browser's way from the console's login to its callback; the console's final answer."""
    location = app.client.get("/auth/oidc/login", follow_redirects=False).headers["location"]
    with httpx.Client(timeout=10) as browser:
        for _ in range(20):
            if location.startswith(CALLBACK):
                parts = urlsplit(location)
                return app.client.get(f"{parts.path}?{parts.query}", follow_redirects=False)
            answer = browser.get(location, follow_redirects=False)
            while answer.status_code == 200:
                action = re.search(r'<form[^>]*action="([^"]+)"', answer.text)
                assert action, answer.text[:500]
                fields = dict(
                    re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', answer.text)
                )
                if 'name="login"' in answer.text:
                    fields.update(login=user, password="any")
                answer = browser.post(urljoin(location, action.group(1)), data=fields, follow_redirects=False)
            assert "location" in answer.headers, f"{answer.status_code} {answer.text[:300]}"
            location = urljoin(location, answer.headers["location"])
    raise AssertionError("never came back to the console's callback")


def test_a_person_signs_in_through_the_provider_with_the_role_of_the_claim(oidc_app: ConsoleUnderTest) -> None:
    answer = sign_in_at_the_provider(oidc_app, "alice")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    session = oidc_app.client.get("/api/v1/session").json()
    assert session["user"] == "alice" and session["role"] == "admin"
    assert "Single sign-on" in oidc_app.client.get("/login").text


def test_the_role_the_provider_gives_limits_what_the_person_may_do(oidc_app: ConsoleUnderTest) -> None:
    sign_in_at_the_provider(oidc_app, "victor")
    session = oidc_app.client.get("/api/v1/session").json()
    assert session["role"] == "viewer"
    csrf = {"X-CSRF-Token": session["csrf_token"]}
    refused = oidc_app.client.post("/api/v1/forward-nodes", json={"ae_title": "X"}, headers=csrf)
    assert refused.status_code == 403


def test_an_account_without_a_console_role_is_refused(oidc_app: ConsoleUnderTest) -> None:
    answer = sign_in_at_the_provider(oidc_app, "nobody")
    assert answer.status_code == 403
    assert "resource_access.karnak.roles" in answer.json()["detail"]
    assert oidc_app.client.get("/api/v1/session").status_code == 401
