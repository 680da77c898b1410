"""Signing in and out in the browser, the menu each role sees, and writes without the session's CSRF token."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.console.browser.conftest import ConsoleServer, screenshot, sign_in

EVERY_PAGE = [
    "Gateway",
    "Projects",
    "Profiles",
    "Pseudonyms",
    "Auth configs",
    "Monitoring",
    "Services",
    "Configuration history",
    "Dead letters",
    "Audit",
    "API",
]


def menu(page: Page) -> list[str]:
    return [text.strip() for text in page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()]


def test_a_page_asked_for_before_signing_in_leads_to_the_login_page(page: Page) -> None:
    page.goto("/gateway")
    expect(page).to_have_url("/login")
    expect(page.get_by_label("User name")).to_be_focused()
    screenshot(page, "login")


def test_a_wrong_password_is_said_on_the_login_page(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")


def test_an_admin_signs_in_with_the_keyboard_and_sees_every_page_in_the_menu(page: Page) -> None:
    page.goto("/login")
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    page.keyboard.type("alice-browser-password")
    page.keyboard.press("Enter")
    expect(page).to_have_url("/gateway")
    assert menu(page) == EVERY_PAGE
    expect(page.get_by_text("alice (admin)")).to_be_visible()


def test_a_viewer_sees_only_the_pages_of_the_viewer_role(page: Page) -> None:
    sign_in(page, "viewer")
    assert menu(page) == [
        "Gateway",
        "Projects",
        "Profiles",
        "Auth configs",
        "Monitoring",
        "Services",
        "Configuration history",
        "API",
    ]


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(page: Page) -> None:
    sign_in(page)
    # The browser's cookie goes with the request (as a forged form from another site would send it).
    forged = page.request.post("/logout", form={"csrf_token": "forged"})
    assert forged.status == 403
    assert "CSRF" in forged.text()
    page.goto("/gateway")
    expect(page).to_have_url("/gateway")


def test_logging_out_ends_the_session(page: Page, console_server: ConsoleServer) -> None:
    sign_in(page)
    page.get_by_role("button", name="Logout").click()
    expect(page).to_have_url("/login?signed_out=true")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/gateway")
    expect(page).to_have_url("/login")
