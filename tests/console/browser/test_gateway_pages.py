"""The Gateway pages in Chromium: forward nodes, sources, the destination forms and their rules.

A DICOM destination made in the browser with a bad port shows the model's message at the Port field;
fixed and saved it is green in the list, disabled it is red; the STOW form's Authorization dialog
appends a Basic header once and refuses the second; de-identification asked for with no project opens
Karnak's popup; a viewer has no edit button and a forged post is refused; and a study sent with storescu
to a destination made in the browser arrives there.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from karnak_dicom.testing import make_study
from tests.console.browser.conftest import (
    PACS_AE_TITLE,
    ConsoleServer,
    open_page,
    screenshot,
    sign_in,
)
from tests.support.kheops import FakeKheops, Token
from tests.support.servers import storescu, wait_until

NODE = "KARNAK-GW"
GREEN, RED = "rgb(30, 142, 62)", "rgb(179, 38, 30)"
PROFILE = Path(__file__).resolve().parents[2] / "data" / "karnak-profiles" / "profileByDefault.yml"


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def fill_dicom_destination(page: Page, destination: str, port: str) -> None:
    page.get_by_label("Destination id").fill(destination)
    page.get_by_label("Description", exact=True).fill(f"browser {destination}")
    page.get_by_label("AETitle", exact=True).fill(PACS_AE_TITLE)
    page.get_by_label("Hostname", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(port)


def enabled_dot(page: Page, destination: str) -> Any:
    return page.locator(f"#destination-{destination} .enabled-dot")


def api_csrf(page: Page) -> str:
    token: str = page.request.get("/api/v1/session").json()["csrf_token"]
    return token


def latest_revision(server: ConsoleServer) -> int:
    result = server.gateway.karnak("config", "history", "--json", "--limit", "1")
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)[0]["revision"])


def wait_for_revision(server: ConsoleServer, revision: int) -> None:
    """Until the receiver, the processor and the dicom-sender all run `revision` (karnak status)."""
    seen: list[dict[str, Any]] = []

    def applied() -> bool:
        result = server.gateway.karnak("status", "--json", "--wait", "2")
        seen[:] = json.loads(result.stdout) if result.stdout.strip() else []
        running = {r["service"] for r in seen if r["revision"] == revision and r["ready"]}
        return {"receiver", "processor", "dicom-sender"} <= running

    wait_until(applied, 60, f"every service on revision {revision}: {seen}")


# --- forward nodes and sources --------------------------------------------------------------------


def test_a_forward_node_made_with_the_keyboard_copies_the_gateways_own_dicom_configuration(
    page: Page, console_server: ConsoleServer
) -> None:
    sign_in(page)
    ae_title = unique("FWD").upper()[:16]
    page.get_by_label("Forward AETitle").focus()
    page.keyboard.type(ae_title)
    page.keyboard.press("Tab")
    page.keyboard.type("made in the browser")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"/gateway/{ae_title}")
    port = console_server.config["listener"]["port"]
    expect(page.locator("#dicom-configuration")).to_contain_text(f"AE Title: {ae_title}")
    expect(page.locator("#dicom-configuration")).to_contain_text("Host: 127.0.0.1")
    expect(page.locator("#dicom-configuration")).to_contain_text(f"Port: {port}")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy DICOM configuration").click()
    expect(page.locator("#dicom-configuration-status")).to_have_text("Copied to the clipboard.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f"AE Title: {ae_title}" in copied and f"Port: {port}" in copied
    page.goto("/gateway")
    expect(page.get_by_role("link", name=ae_title)).to_be_visible()
    screenshot(page, "forward-nodes")

    page.get_by_role("link", name=ae_title).click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url("/gateway")
    expect(page.get_by_role("link", name=ae_title)).to_have_count(0)


def test_a_forward_node_whose_ae_title_is_taken_says_so_at_the_field(page: Page) -> None:
    sign_in(page)
    page.get_by_label("Forward AETitle").fill(NODE)
    page.get_by_role("button", name="New forward node").click()
    expect(page.locator("#f-ae-title-error")).to_have_text(f"'{NODE}' is already the AE title of a forward node")
    expect(page.get_by_label("Forward AETitle")).to_have_attribute("aria-invalid", "true")


def test_a_source_with_a_hostname_to_check_is_listed_on_the_sources_tab(page: Page) -> None:
    sign_in(page)
    page.goto(f"/gateway/{NODE}?tab=sources")
    page.get_by_role("link", name="Source", exact=True).click()
    source = unique("SRC").upper()[:16]
    page.get_by_label("AETitle", exact=True).fill(source)
    page.get_by_label("Hostname", exact=True).fill("127.0.0.1")
    expect(page.get_by_label("Check the hostname")).to_be_checked()
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"/gateway/{NODE}?tab=sources")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=source))
    expect(row).to_contain_text("127.0.0.1")
    expect(row).to_contain_text("yes")
    screenshot(page, "sources")


# --- the DICOM destination ------------------------------------------------------------------------


def test_a_bad_port_is_shown_at_the_field_then_the_saved_destination_is_green_and_red_once_disabled(
    page: Page, console_server: ConsoleServer
) -> None:
    sign_in(page)
    page.goto(f"/gateway/{NODE}")
    page.get_by_role("link", name="DICOM", exact=True).click()
    expect(page.get_by_label("Enable destination")).to_be_checked()
    expect(page.get_by_label("Transfer Syntax")).to_have_value("keep")
    destination = unique("pacs")
    fill_dicom_destination(page, destination, "70000")
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#f-port-error")).to_have_text("must be between 1 and 65535")
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Port", exact=True)).to_have_attribute("aria-describedby", "f-port-error")
    expect(page.get_by_label("Destination id")).to_have_value(destination)  # what was typed is kept
    screenshot(page, "destination-dicom-error")

    page.get_by_label("Port", exact=True).fill(str(console_server.pacs.port))
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"/gateway/{NODE}")
    expect(enabled_dot(page, destination)).to_have_css("background-color", GREEN)
    expect(enabled_dot(page, destination)).to_have_attribute("aria-label", "enabled")
    expect(page.locator(f"#depth-{destination}")).to_have_text("0")
    expect(page.locator(f"#activity-{destination}")).to_have_text("idle")

    page.get_by_role("button", name=f"Echo {destination}").click()
    expect(page.locator(f"#check-{destination}")).to_contain_text(f"OK: C-ECHO {NODE} → {PACS_AE_TITLE}@127.0.0.1")
    screenshot(page, "destinations")

    page.get_by_role("link", name=destination).click()
    page.get_by_label("Enable destination").uncheck()
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"/gateway/{NODE}")
    expect(enabled_dot(page, destination)).to_have_css("background-color", RED)
    expect(enabled_dot(page, destination)).to_have_attribute("aria-label", "disabled")


def test_tag_morphing_and_de_identification_exclude_each_other_and_the_pseudonym_type_shows_its_fields(
    page: Page,
) -> None:
    sign_in(page)
    project = unique("research")
    csrf = api_csrf(page)
    headers = {"X-CSRF-Token": csrf}
    uploaded = page.request.post(
        f"/api/v1/profiles?name={project}",
        data=PROFILE.read_text(),
        headers={**headers, "content-type": "application/x-yaml"},
    )
    assert uploaded.status == 201, uploaded.text()
    created = page.request.post("/api/v1/projects", data={"name": project, "profile": project}, headers=headers)
    assert created.status == 201, created.text()

    page.goto(f"/gateway/{NODE}/new-destination/dicom")
    morphing, deidentify = page.get_by_label("Activate tag morphing"), page.get_by_label("Activate de-identification")
    morphing.check()
    deidentify.check()
    expect(morphing).not_to_be_checked()
    expect(page.locator("#no-project-dialog")).to_be_hidden()
    page.locator("#f-deidentification-project").select_option(project)
    page.get_by_label("Pseudonym type").select_option("tag")
    expect(page.get_by_label("Tag", exact=True)).to_be_visible()
    expect(page.get_by_label("Url", exact=True)).to_be_hidden()
    page.get_by_label("Pseudonym type").select_option("api")
    expect(page.get_by_label("Tag", exact=True)).to_be_hidden()
    expect(page.get_by_label("JSON Response Path")).to_be_visible()
    page.get_by_label("Pseudonym type").select_option("tag")
    page.get_by_label("Tag", exact=True).fill("(0010,1000)")
    page.get_by_label("Position").fill("-1")
    fill_dicom_destination(page, unique("deid"), "11112")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-deidentification-pseudonym-position-error")).to_have_text(
        "input should be greater than or equal to 0"
    )
    # The form came back as it was sent: de-identification on, tag type, its fields shown.
    expect(page.get_by_label("Activate de-identification")).to_be_checked()
    expect(page.get_by_label("Tag", exact=True)).to_have_value("(0010,1000)")


# --- the STOW destination -------------------------------------------------------------------------


def test_a_basic_authorization_header_is_appended_once_and_refused_the_second_time(page: Page) -> None:
    sign_in(page)
    page.goto(f"/gateway/{NODE}/new-destination/stow")
    headers = page.get_by_label("Headers")
    headers.fill("<key>X-Site</key>\n<value>north</value>")
    page.get_by_role("button", name="Generate Authorization Header").click()
    dialog = page.get_by_role("dialog", name="Generate Authorization Header")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Authorization Type")).to_have_value("basic")
    dialog.get_by_label("Username").fill("user")
    dialog.get_by_label("Password").fill("pass")
    dialog.get_by_role("button", name="Generate Headers").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_label("Headers")).to_have_value(
        "<key>X-Site</key>\n<value>north</value>\n<key>Authorization</key>\n<value>Basic dXNlcjpwYXNz</value>"
    )

    # The second time, with the keyboard: the headers hold an Authorization already.
    page.get_by_role("button", name="Generate Authorization Header").focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Username").fill("other")
    dialog.get_by_label("Password").fill("secret")
    dialog.get_by_label("Password").press("Enter")
    expect(dialog.get_by_role("alert")).to_have_text(
        "Cannot generate Authorization Header: The Headers already contain an Authorization tag. "
        "Please remove it if you want to generate it."
    )
    expect(page.get_by_label("Headers")).to_have_value(
        "<key>X-Site</key>\n<value>north</value>\n<key>Authorization</key>\n<value>Basic dXNlcjpwYXNz</value>"
    )
    screenshot(page, "destination-stow-authorization")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Saved, the header is masked when shown again; a header added beside the mask keeps the stored one.
    destination = unique("stow")
    page.get_by_label("Destination id").fill(destination)
    page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/dicomweb/studies")
    page.get_by_label("Enable destination").uncheck()  # no stow-sender runs here: nothing is sent to it
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"/gateway/{NODE}")
    page.get_by_role("link", name=destination).click()
    shown = page.get_by_label("Headers").input_value()
    assert "<value>••••YXNz</value>" in shown and "dXNlcjpwYXNz" not in shown
    page.get_by_label("Headers").fill(shown + "\n<key>X-Other</key>\n<value>1</value>")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(f"/gateway/{NODE}")
    stored = page.request.get(f"/api/v1/forward-nodes/{NODE}/destinations/{destination}").json()["item"]
    # Masked by the API: the last four are the real header's, so the stored value is the generated one.
    assert stored["headers"] == {"X-Site": "••••", "Authorization": "••••YXNz", "X-Other": "••••"}


def test_kheops_album_rows_are_added_and_a_missing_token_is_said_at_its_cell(page: Page) -> None:
    sign_in(page)
    page.goto(f"/gateway/{NODE}/new-destination/stow")
    page.get_by_label("Destination id").fill(unique("kheops"))
    page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/dicomweb/studies")
    page.get_by_label("Switching in different KHEOPS albums").check()
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_label("Url API").fill("not a url")
    page.get_by_label("Valid token of destination").fill("destination-token")
    page.get_by_label("Valid token of source").fill("source-token")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("td.invalid .field-error")).to_have_text("'not a url' is not an http:// or https:// URL")
    expect(page.get_by_label("Switching in different KHEOPS albums")).to_be_checked()


def test_a_saved_kheops_album_has_its_tokens_checked_by_introspection_and_the_destination_is_deleted(
    page: Page, console_server: ConsoleServer, amqp_url: str
) -> None:
    kheops = FakeKheops(tokens={"album-token": Token(frozenset({"write"})), "read-only": Token(frozenset({"read"}))})
    try:
        sign_in(page)
        page.goto(f"/gateway/{NODE}/new-destination/stow")
        destination = unique("kheops")
        page.get_by_label("Destination id").fill(destination)
        page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/dicomweb/studies")
        page.get_by_label("Switching in different KHEOPS albums").check()
        page.get_by_role("button", name="Add", exact=True).click()
        page.get_by_label("Url API").fill(kheops.url_api)
        page.get_by_label("Valid token of destination").fill("album-token")
        page.get_by_label("Valid token of source").fill("read-only")
        page.get_by_label("Enable destination").uncheck()  # no stow-sender runs here: nothing is sent to it
        page.get_by_role("button", name="Save").click()
        expect(enabled_dot(page, destination)).to_have_css("background-color", RED)
        # Deleting a destination keeps its queue (and what waits in it): the run's end deletes it.
        console_server.register_destinations(amqp_url, [{"id": destination, "type": "stow"}])

        page.get_by_role("link", name=destination).click()
        expect(page.get_by_label("Valid token of destination")).to_have_value(re.compile("^••••"))  # masked
        page.get_by_role("button", name="Check tokens").click()
        result = page.get_by_role("status").filter(has_text="token")
        expect(result).to_contain_text("destination token: valid")
        expect(result).to_contain_text("Failed")
        expect(result).not_to_contain_text("source token: valid")
        assert [c.form.get("token") for c in kheops.calls_of("POST")] == ["album-token", "read-only"]

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete").click()
        expect(page).to_have_url(f"/gateway/{NODE}")
        expect(page.get_by_role("link", name=destination)).to_have_count(0)
    finally:
        kheops.stop()


# --- no project, and the viewer -------------------------------------------------------------------


def test_de_identification_with_no_project_opens_the_popup_and_continue_unchecks_it(
    browser: Browser, fresh_console: ConsoleServer
) -> None:
    page = open_page(browser, fresh_console)
    try:
        sign_in(page)
        page.goto(f"/gateway/{NODE}/new-destination/dicom")
        page.get_by_label("Activate de-identification").check()
        popup = page.get_by_role("dialog", name="No projects created")
        expect(popup).to_be_visible()
        expect(popup).to_contain_text("You can't use the tag morphing or de-identification")
        screenshot(page, "no-project-popup")
        popup.get_by_role("button", name="Continue").click()
        expect(popup).to_be_hidden()
        expect(page.get_by_label("Activate de-identification")).not_to_be_checked()

        page.get_by_label("Activate tag morphing").check()
        expect(popup).to_be_visible()
        popup.get_by_role("link", name="Create a project").click()
        expect(page).to_have_url("/projects")
    finally:
        page.context.close()


def test_a_viewer_sees_no_edit_button_and_a_forged_post_is_refused(
    page: Page, browser: Browser, console_server: ConsoleServer
) -> None:
    admin = open_page(browser, console_server)
    try:
        sign_in(admin)
        shown = unique("shown")
        body = {"id": shown, "type": "dicom", "ae_title": "SHOWN", "hostname": "127.0.0.1", "port": 104}
        created = admin.request.post(
            f"/api/v1/forward-nodes/{NODE}/destinations", data=body, headers={"X-CSRF-Token": api_csrf(admin)}
        )
        assert created.status == 201, created.text()
        # Disabled once made, so the end-to-end test's study goes to no other destination than its own.
        disabled = {**body, "enabled": False}
        replaced = admin.request.put(
            f"/api/v1/forward-nodes/{NODE}/destinations/{shown}",
            data=disabled,
            headers={"X-CSRF-Token": api_csrf(admin)},
        )
        assert replaced.status == 200, replaced.text()
    finally:
        admin.context.close()

    sign_in(page, "viewer")
    expect(page.get_by_role("button", name="New forward node")).to_have_count(0)
    page.goto(f"/gateway/{NODE}")
    for name in ("Save", "Delete", "Echo"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="DICOM", exact=True)).to_have_count(0)
    page.goto(f"/gateway/{NODE}/destinations/{shown}")
    expect(page.get_by_label("Hostname", exact=True)).to_have_value("127.0.0.1")
    expect(page.get_by_label("Hostname", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Save")).to_have_count(0)
    expect(page.get_by_role("button", name="Generate Authorization Header")).to_have_count(0)
    page.goto(f"/gateway/{NODE}/new-destination/dicom")
    expect(page.get_by_role("heading", name="Not authorized")).to_be_visible()

    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = {
        "csrf_token": token or "",
        "type": "dicom",
        "id": "forged-by-viewer",
        "ae_title": "X",
        "hostname": "127.0.0.1",
        "port": "104",
    }
    refused = page.request.post(f"/gateway/{NODE}/destinations", form=forged)
    assert refused.status == 403
    assert "the viewer role may not do this" in refused.text()
    listed = page.request.get(f"/api/v1/forward-nodes/{NODE}/destinations").json()["items"]
    assert "forged-by-viewer" not in [d["id"] for d in listed]


def test_a_post_from_another_site_without_the_csrf_token_changes_nothing(page: Page) -> None:
    sign_in(page)
    forged = {"type": "dicom", "id": "forged-no-token", "ae_title": "X", "hostname": "127.0.0.1", "port": "104"}
    refused = page.request.post(f"/gateway/{NODE}/destinations", form=forged)
    assert refused.status == 403
    assert "CSRF" in refused.text()
    listed = page.request.get(f"/api/v1/forward-nodes/{NODE}/destinations").json()["items"]
    assert "forged-no-token" not in [d["id"] for d in listed]


# --- end to end -----------------------------------------------------------------------------------


def test_a_study_sent_with_storescu_arrives_at_the_destination_made_in_the_browser(
    page: Page, console_server: ConsoleServer, amqp_url: str, tmp_path: Path
) -> None:
    sign_in(page)
    page.goto(f"/gateway/{NODE}/new-destination/dicom")
    destination = unique("e2e")
    fill_dicom_destination(page, destination, str(console_server.pacs.port))
    page.get_by_role("button", name="Save").click()
    expect(enabled_dot(page, destination)).to_have_css("background-color", GREEN)
    stored = page.request.get(f"/api/v1/forward-nodes/{NODE}/destinations/{destination}").json()["item"]
    console_server.register_destinations(amqp_url, [stored])
    wait_for_revision(console_server, latest_revision(console_server))

    before = set(console_server.pacs.files())
    study = make_study(tmp_path / "study", ct=3, mr=0, multiframe=0, large=0, compressed=0)
    sent = storescu(console_server.gateway.listener_port, NODE, "CT01", study.paths)
    assert sent.returncode == 0, sent.stderr
    wait_until(
        lambda: len(set(console_server.pacs.files()) - before) >= len(study.paths),
        90,
        f"the study at {destination} (see {console_server.gateway.log_path})",
    )
