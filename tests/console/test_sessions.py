"""Browser sessions and tokens: login, CSRF on cookie writes, rate-limited logins, idle timeout, headers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import itsdangerous.timed
import pytest
from karnak_console.accounts import AccountStore
from karnak_console.main import announce_first_admin

from tests.console.conftest import ConsoleUnderTest

GW = "/api/v1/forward-nodes/KARNAK-GW"


def sign_in(app: ConsoleUnderTest, name: str = "alice", password: str = "correct horse") -> str:
    answer = app.client.post("/api/v1/session", json={"username": name, "password": password})
    assert answer.status_code == 200, answer.json()
    token: str = answer.json()["csrf_token"]
    return token


@pytest.fixture
def alice(app: ConsoleUnderTest) -> ConsoleUnderTest:
    app.console.accounts.add_user("alice", "admin", "correct horse")
    return app


def test_a_signed_in_browser_writes_only_with_its_csrf_token(alice: ConsoleUnderTest) -> None:
    csrf = sign_in(alice)
    cookie = alice.client.cookies.get("karnak_session")
    assert cookie
    body = {"ae_title": "CT01"}
    assert alice.client.post(f"{GW}/sources", json=body).status_code == 403
    assert alice.client.post(f"{GW}/sources", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    answer = alice.client.post(f"{GW}/sources", json=body, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 201
    entry = alice.client.get("/api/v1/audit").json()[0]
    assert entry["actor"] == "alice" and entry["origin"] == "console"


def test_the_session_cookie_is_httponly_and_samesite(alice: ConsoleUnderTest) -> None:
    answer = alice.client.post("/api/v1/session", json={"username": "alice", "password": "correct horse"})
    header = answer.headers["set-cookie"].lower()
    assert "httponly" in header and "samesite=lax" in header and "karnak_session=" in header


def test_a_session_ends_after_the_idle_timeout(alice: ConsoleUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    sign_in(alice)
    assert alice.client.get("/api/v1/session").status_code == 200
    idle = alice.console.settings.console.session_idle_minutes * 60
    later = time.time() + idle + 5
    # The cookie's signature carries its time: the clock moved past the idle timeout reads it as expired.
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later)
    assert alice.client.get("/api/v1/session").status_code == 401


def test_failed_logins_are_rate_limited_per_account(alice: ConsoleUnderTest) -> None:
    limit = alice.console.settings.console.login_attempts_per_minute
    for _ in range(limit):
        wrong = alice.client.post("/api/v1/session", json={"username": "alice", "password": "guess"})
        assert wrong.status_code == 401
    throttled = alice.client.post("/api/v1/session", json={"username": "alice", "password": "correct horse"})
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0


def test_signing_out_ends_the_session(alice: ConsoleUnderTest) -> None:
    csrf = sign_in(alice)
    assert alice.client.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert alice.client.get("/api/v1/session").status_code == 401


def test_the_login_page_needs_its_own_csrf_token(alice: ConsoleUnderTest) -> None:
    forged = alice.client.post(
        "/login", data={"username": "alice", "password": "correct horse"}, follow_redirects=False
    )
    assert forged.headers["location"] == "/login?error=expired"
    page = alice.client.get("/login")
    assert '<label for="username">' in page.text
    # Scripts are files of the console (the CSP allows no inline script).
    assert all(tag.startswith(' src="/static/') for tag in page.text.split("<script")[1:])
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    signed = alice.client.post(
        "/login", data={"username": "alice", "password": "correct horse", "csrf_token": token}, follow_redirects=False
    )
    assert signed.headers["location"] == "/"
    assert "alice (admin)" in alice.client.get("/").text


def test_every_response_carries_the_security_headers(app: ConsoleUnderTest) -> None:
    for answer in (app.client.get("/healthz"), app.client.get("/login"), app.get("/api/v1/forward-nodes")):
        csp = answer.headers["content-security-policy"]
        assert (
            "frame-ancestors 'none'" in csp
            and "script-src 'self'" in csp
            and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        )
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_api_docs_load_their_script_from_files_not_inline(app: ConsoleUnderTest) -> None:
    page = app.get("/api/docs").text
    assert "<script>" not in page and "/static/swagger-init.js" in page
    assert app.client.get("/api/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert app.get("/api/v1/openapi.json").json()["info"]["title"] == "Karnak console API"


def test_tokens_are_stored_hashed_and_revocable(app: ConsoleUnderTest) -> None:
    token = app.tokens["operator"]
    with app.console.accounts.engine.connect() as connection:
        stored = " ".join(str(row) for row in connection.exec_driver_sql("SELECT * FROM console_tokens"))
    assert token.split("_")[2] not in stored
    assert app.get("/api/v1/services", role="operator").status_code == 200
    created = app.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).json()
    assert (
        app.client.get("/api/v1/services", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 200
    )
    assert app.delete("/api/v1/tokens/ci").status_code == 204
    assert (
        app.client.get("/api/v1/services", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401
    )
    assert "token" not in app.get("/api/v1/tokens").json()[0]


def test_passwords_are_argon2_hashes(app: ConsoleUnderTest) -> None:
    app.console.accounts.add_user("bob", "viewer", "a long password")
    with app.console.accounts.engine.connect() as connection:
        (stored,) = connection.exec_driver_sql("SELECT password_hash FROM console_users WHERE name='bob'").one()
    assert stored.startswith("$argon2id$")
    assert app.console.accounts.verify_password("bob", "a long password") is not None
    assert app.console.accounts.verify_password("bob", "wrong") is None


def test_the_first_start_creates_admin_once_with_an_owner_only_password_file(
    app: ConsoleUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    accounts: AccountStore = app.console.accounts
    with accounts.sessions.begin() as session:
        session.execute(__import__("sqlalchemy").text("DELETE FROM console_users"))
    announce_first_admin(app.console)
    line = capsys.readouterr().out
    path = Path(app.console.settings.console.admin_password_file or "")
    password = path.read_text().strip()
    assert f"with the password {password} (also in {path}" in line
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert accounts.verify_password("admin", password) is not None
    announce_first_admin(app.console)
    assert capsys.readouterr().out == ""


def karnak(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("karnak")), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)


def test_karnak_users_and_tokens_commands_read_the_password_from_stdin_and_print_the_token_once(
    config_path: Path, app: ConsoleUnderTest
) -> None:
    added = karnak(
        "users", "add", "carol", "--role", "operator", "--config", str(config_path), stdin="carol's password\n"
    )
    assert added.returncode == 0, added.stderr
    assert app.console.accounts.verify_password("carol", "carol's password") is not None
    created = karnak("tokens", "create", "script", "--role", "admin", "--config", str(config_path))
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert app.client.get("/api/v1/audit", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listed = karnak("tokens", "list", "--config", str(config_path))
    assert "script\tadmin\tactive" in listed.stdout and token not in listed.stdout
    entries = app.get("/api/v1/audit?origin=cli").json()
    assert {e["object"] for e in entries} >= {"users/carol", "tokens/script"}
    assert karnak("users", "add", "dave", "--role", "root", "--config", str(config_path)).returncode == 2
