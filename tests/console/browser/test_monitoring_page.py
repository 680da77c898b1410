"""The Monitoring page in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright.

The console serves on a free port (uvicorn in a thread; the browser is the session's, from
tests/console/browser/conftest.py) with the rows of test_monitoring_api's `filled`;
a person signs in through the login form, opens the page, reads the tree by its labels and badges, sees
times in the browser's zone (the page's own script), then a new failing series appears without a reload
(htmx polling). No script error and no Content-Security-Policy violation is allowed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import uvicorn
from playwright.sync_api import Browser, Page

from karnak_monitor.recorder import SeriesRecorder
from karnak_shared.service.testing.servers import free_port, wait_for_port
from tests.console.conftest import ConsoleUnderTest
from tests.console.test_monitoring_api import T0, event, filled

pytestmark = pytest.mark.browser
__all__ = ["filled"]

PASSWORD = "victor-monitoring-password"


@pytest.fixture
def served(filled: ConsoleUnderTest) -> Iterator[str]:
    filled.console.accounts.add_user("victor", "viewer", PASSWORD)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(filled.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def monitoring_page(served: str, browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A page of the run's browser (the framework's session fixture) on the console serving `filled`."""
    context = browser.new_context(base_url=served, timezone_id="Europe/Zurich", locale="en-GB")
    context.set_default_timeout(15_000)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    # Every answer the page asked for (the favicon aside: the console has none) must have succeeded.
    opened.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 and "favicon" not in r.url else None,
    )
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" and "404" not in m.text else None)
    yield opened, problems
    context.close()


def test_a_viewer_reads_the_tree_in_local_time_and_sees_a_new_failure_appear_by_itself(
    monitoring_page: tuple[Page, list[str]],
    filled: ConsoleUnderTest,
) -> None:
    browser, problems = monitoring_page
    browser.goto("/login")
    browser.get_by_label("User name").fill("victor")
    browser.get_by_label("Password").fill(PASSWORD)
    browser.get_by_role("button", name="Log in").click()
    browser.wait_for_url(lambda url: "/login" not in url)

    browser.goto("/monitoring")
    browser.get_by_label("Range", exact=True).select_option(label="All")
    browser.get_by_label("Status", exact=True).select_option(label="Error")
    browser.get_by_role("button", name="Apply filters").click()
    browser.wait_for_url("**/monitoring?**status=error**")
    tree = browser.get_by_role("list", name="Destinations")
    assert tree.get_by_text("KARNAK-GW → archive").is_visible()
    assert tree.get_by_text("KARNAK-GW → research").count() == 0
    assert tree.get_by_text("failed: 0xA900 (Data set does not match) (2)").is_visible()
    assert tree.locator(".badge-error").first.inner_text() == "Error"
    # 08:02:02 UTC is 09:02:02 in Zurich in December: the page's script shows the browser's zone.
    seen = tree.locator("li.series time").first
    assert seen.get_attribute("datetime") == "2026-12-01T08:02:02+00:00"
    assert "09:02:02" in seen.inner_text()
    assert browser.get_by_label("Patient ID (original)").count() == 0  # not for a viewer

    # A new failing series of another destination: it appears without a reload (htmx polls every 10 s).
    recorder = SeriesRecorder(filled.console.accounts.sessions)
    recorder.record(event("failed", "teaching", 4, 0, T0 + 300, reason="0xC000 (Cannot understand)"))
    browser.get_by_text("KARNAK-GW → teaching").wait_for(timeout=20_000)
    assert tree.get_by_text("failed: 0xC000 (Cannot understand) (1)").is_visible()
    assert problems == []
