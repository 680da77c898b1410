"""The operations pages in the browser: projects and their secret, profiles, pseudonyms, dead letters, roles.

Each test names what it makes with a unique suffix: the run shares one console (conftest.py).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import yaml
from playwright.sync_api import Page, expect

from karnak_shared import header_names
from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.console.browser.conftest import ConsoleServer, screenshot, sign_in

PROFILES = Path(__file__).resolve().parents[2] / "data" / "karnak-profiles"


def unique(word: str) -> str:
    return f"{word}-{uuid.uuid4().hex[:6]}"


def upload_profile(page: Page, name: str, file: str = "profileByDefault.yml") -> None:
    page.goto("/profiles")
    page.get_by_label("Profile file (YAML)").set_input_files(
        {"name": file, "mimeType": "application/x-yaml", "buffer": (PROFILES / file).read_bytes()}
    )
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Upload").click()


def create_project(page: Page, name: str, profile: str) -> None:
    page.goto("/projects")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("De-identification Profile").select_option(profile)
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("heading", name=f"Project {name}")).to_be_visible()


@pytest.fixture
def project(page: Page) -> str:
    """A profile and a project using it, made through the pages as the admin (who stays signed in)."""
    sign_in(page, "admin")
    profile, name = unique("basic"), unique("study")
    upload_profile(page, profile)
    expect(page.get_by_role("heading", name=f"Profile {profile}")).to_be_visible()
    create_project(page, name, profile)
    return name


# --- projects -------------------------------------------------------------------------------------


def test_a_generated_project_secret_is_shown_once_then_only_masked(page: Page, project: str) -> None:
    page.goto(f"/projects/{project}")
    page.get_by_role("button", name="Generate Secret").click()
    secret = page.locator("#new-secret").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{32}", secret), secret
    expect(page.locator("#masked-secret")).to_have_text("••••" + secret[-4:])
    screenshot(page, "project-secret")

    page.goto(f"/projects/{project}")
    expect(page.locator("#new-secret")).to_have_count(0)
    expect(page.locator("#masked-secret")).to_have_text("••••" + secret[-4:])
    assert secret not in page.content()
    page.goto("/projects")
    assert secret not in page.content()
    screenshot(page, "projects")


def test_an_imported_secret_that_is_not_hexadecimal_is_refused_at_its_field(page: Page, project: str) -> None:
    page.goto(f"/projects/{project}")
    page.get_by_label("Import a project secret").fill("not-a-secret")
    page.get_by_role("button", name="Update").click()
    field = page.get_by_label("Import a project secret")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-secret-error")).to_have_text("must be 32 hexadecimal digits (dashes allowed)")


def test_a_used_projects_secret_changes_only_once_the_warning_is_confirmed(
    page: Page, project: str, console_server: ConsoleServer, amqp_url: str
) -> None:
    destination = {"id": unique("pacs"), "type": "dicom", "ae_title": "PACS", "hostname": "127.0.0.1", "port": 104}
    destination["deidentification"] = {"project": project}
    console_server.register_destinations(amqp_url, [destination])
    token = page.request.get("/api/v1/session").json()["csrf_token"]
    made = page.request.post(
        "/api/v1/forward-nodes/KARNAK-GW/destinations", data=destination, headers={"X-CSRF-Token": token}
    )
    assert made.status == 201, made.text()
    page.goto(f"/projects/{project}")
    masked = page.locator("#masked-secret").inner_text()
    expect(page.locator("#secret-warning")).to_contain_text(
        "the consistency of previously de-identified DICOM files cannot be guaranteed anymore"
    )
    page.get_by_role("button", name="Generate Secret").click()
    expect(page.locator("#form-errors")).to_contain_text(f"is used by KARNAK-GW/{destination['id']}")
    expect(page.locator("#f-confirm-generate-error")).to_be_visible()
    expect(page.locator("#new-secret")).to_have_count(0)
    expect(page.locator("#masked-secret")).to_have_text(masked)

    page.get_by_label("I understand: give a project in use a new secret").check()
    page.get_by_role("button", name="Generate Secret").click()
    secret = page.locator("#new-secret").inner_text().strip()
    expect(page.locator("#masked-secret")).to_have_text("••••" + secret[-4:])

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete project").click()
    expect(page.locator("#form-errors")).to_contain_text(
        f"The project {project} can't be removed: it is used by the destinations KARNAK-GW/{destination['id']}"
    )


# --- profiles -------------------------------------------------------------------------------------


def test_a_profile_with_bad_elements_is_refused_with_each_elements_error(page: Page) -> None:
    sign_in(page, "admin")
    name = unique("chain")
    upload_profile(page, name, "profileChain.yml")
    report = page.get_by_role("alert")
    expect(report.get_by_role("heading", name="Errors occurred in profile elements")).to_be_visible()
    expect(page.locator("#element-1")).to_have_class("element-ok")
    third = page.locator("#element-3")
    expect(third).to_have_class("element-error")
    expect(third).to_contain_text("Missing tags (generate an error)")
    expect(third).to_contain_text("Error : tags: at least one tag is required for action.on.specific.tags")
    expect(page.locator("#element-4")).to_contain_text("Error : action: required for action.on.specific.tags")
    screenshot(page, "profile-errors")
    page.goto("/profiles")
    expect(page.get_by_role("link", name=name)).to_have_count(0)


def test_a_profile_shows_its_elements_in_order_and_downloads_as_its_yaml(page: Page) -> None:
    sign_in(page, "admin")
    name = unique("dates")
    upload_profile(page, name, "profileDate.yml")
    expect(page.get_by_role("heading", name=f"Profile {name}")).to_be_visible()
    rows = page.locator("#elements tbody tr")
    expected = [e["name"] for e in yaml.safe_load((PROFILES / "profileDate.yml").read_text())["profileElements"]]
    expect(rows).to_have_count(len(expected))
    assert [rows.nth(i).locator("td").nth(1).inner_text() for i in range(len(expected))] == expected
    screenshot(page, "profile")
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {name}.yml").click()
    assert Path(download.value.path()).read_text() == (PROFILES / "profileDate.yml").read_text()


def test_deleting_a_profile_a_project_uses_is_refused_naming_the_project(page: Page) -> None:
    sign_in(page, "admin")
    profile, name = unique("used"), unique("study")
    upload_profile(page, profile)
    create_project(page, name, profile)
    page.goto(f"/profiles/{profile}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete profile").click()
    expect(page.get_by_role("alert")).to_contain_text(
        f"The profile {profile} can't be removed: it is used by the projects {name}"
    )
    page.goto("/profiles")
    expect(page.get_by_role("link", name=profile)).to_be_visible()
    screenshot(page, "profiles")


# --- pseudonyms -----------------------------------------------------------------------------------

CSV = (
    "Ext;PID;Issuer;First;Last\n"
    "SUBJ-001;PAT-1;HOSP;Ada;Lovelace\n"
    "SUBJ-002;PAT-2;;Alan;Turing\n"
    "SUBJ-002;PAT-2;;Alan;Turing\n"
)


def test_a_pseudonym_csv_with_a_repeated_patient_is_imported_and_the_duplicate_reported(
    page: Page, project: str
) -> None:
    page.goto("/pseudonyms")
    page.get_by_label("Choose a project:").select_option(project)
    page.get_by_role("button", name="Open").click()
    page.get_by_label("CSV file", exact=True).set_input_files(
        {"name": "ext.csv", "mimeType": "text/csv", "buffer": CSV.encode()}
    )
    page.get_by_label("Separator").fill(";")
    page.get_by_role("button", name="Open CSV").click()

    # Nothing chosen for Patient ID: the import names it, at its field.
    page.get_by_label("External Pseudonym", exact=True).select_option("Ext")
    page.get_by_role("button", name="Upload CSV").click()
    expect(page.get_by_role("alert")).to_contain_text("These fields are not selected: patient_id")
    expect(page.locator("#f-patient-id-error")).to_have_text("is required with a column mapping")

    page.get_by_label("Patient ID", exact=True).select_option("PID")
    page.get_by_label("Issuer of patient ID").select_option("Issuer")
    page.get_by_label("Patient first name").select_option("First")
    page.get_by_label("Patient last name").select_option("Last")
    page.get_by_role("button", name="Upload CSV").click()
    expect(page.get_by_role("status")).to_have_text("2 patient(s) imported from ext.csv.")
    duplicates = page.locator("#duplicates")
    expect(duplicates.get_by_role("heading", name="WARNING Duplicate data")).to_be_visible()
    expect(duplicates.locator("tbody tr")).to_have_count(1)
    expect(duplicates.locator("tbody tr")).to_contain_text("4")
    expect(duplicates.locator("tbody tr")).to_contain_text("SUBJ-002;PAT-2;;Alan;Turing")
    rows = page.locator("#patients tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Lovelace")
    screenshot(page, "pseudonyms-import")

    # Edit one patient, search, then delete the selected one after the confirmation.
    page.get_by_role("button", name="Edit SUBJ-001").click()
    page.get_by_label("External Pseudonym", exact=True).fill("SUBJ-101")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Patient saved.")
    page.get_by_label("Search").fill("101")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    page.get_by_label("SUBJ-101").check()
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Delete selected patients").click()
    expect(page.get_by_role("status")).to_have_text("1 patient(s) deleted.")
    assert questions == ["Do you confirm the deletion of the selected patients?"]
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("SUBJ-002")


# --- dead letters ---------------------------------------------------------------------------------


@pytest.fixture
def parked(
    console_server: ConsoleServer, amqp_url: str
) -> Iterator[tuple[str, str, pika.adapters.blocking_connection.BlockingChannel]]:
    """One message parked for a destination of its own; its origin a queue of the test (to see it come back)."""
    topology = Topology.from_config(parse_config(json.dumps(console_server.config)))
    destination, origin = unique("pacs"), f"{topology.prefix}.{unique('replayed')}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.queue_declare(origin, durable=True)
    headers = {
        "karnak-instance-id": unique("instance"),
        header_names.DESTINATION: destination,
        "karnak-sop-instance-uid": "1.2.826.0.1.3680043.2.1125.1",
        header_names.REASON: "association rejected by the called AE",
        header_names.ORIGIN_EXCHANGE: "",
        header_names.ORIGIN_ROUTING_KEY: origin,
    }
    channel.basic_publish(
        "", topology.dead_queue, b"parked body", properties=pika.BasicProperties(delivery_mode=2, headers=headers)
    )
    yield destination, origin, channel
    channel.queue_delete(origin)
    connection.close()


def test_a_parked_message_is_replayed_from_the_dead_letters_page(
    page: Page, parked: tuple[str, str, pika.adapters.blocking_connection.BlockingChannel]
) -> None:
    destination, origin, channel = parked
    sign_in(page, "operator")
    page.goto("/dead-letters")
    page.get_by_label("Destination").select_option(destination)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#letters tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("association rejected by the called AE")
    screenshot(page, "dead-letters")
    rows.first.get_by_role("checkbox").check()
    page.get_by_role("button", name="Replay selected").click()
    expect(page.get_by_role("status")).to_have_text("1 message(s) sent back where they came from.")
    expect(page.locator("#letters tbody tr")).to_have_text("No parked message matches the filter.")
    method, properties, body = channel.basic_get(origin, auto_ack=True)
    assert method is not None and body == b"parked body"
    assert properties.headers[header_names.DESTINATION] == destination

    page.goto("/audit?action=replay")
    expect(page.locator("#audit > tbody > tr").first).to_contain_text("oscar")


# --- roles ----------------------------------------------------------------------------------------


def test_a_viewer_sees_no_edit_control_and_a_forged_post_is_refused(page: Page, project: str) -> None:
    masked = page.locator("#masked-secret").inner_text()
    page.context.clear_cookies()
    sign_in(page, "viewer")
    page.goto(f"/projects/{project}")
    expect(page.locator("#masked-secret")).to_have_text(masked)
    for button in ("Update", "Generate Secret", "Delete project"):
        expect(page.get_by_role("button", name=button)).to_have_count(0)
    page.goto("/projects")
    expect(page.get_by_role("button", name="Add")).to_have_count(0)
    page.goto("/profiles")
    expect(page.get_by_role("button", name="Upload")).to_have_count(0)
    page.goto("/history")
    page.get_by_role("link", name=re.compile(r"^Revision \d+$")).last.click()
    expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)

    # With the viewer's own session token: refused for the role, and nothing changed.
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = page.request.post(f"/projects/{project}/secret:generate", form={"csrf_token": token or ""})
    assert forged.status == 403
    assert "the viewer role may not do this" in forged.text()
    page.goto(f"/projects/{project}")
    expect(page.locator("#masked-secret")).to_have_text(masked)
    for path in ("/pseudonyms", "/dead-letters", "/audit"):
        assert page.request.get(path).status == 403, path


# --- the other pages ------------------------------------------------------------------------------


def test_the_services_page_shows_each_instance_with_its_revision_readiness_and_broker(page: Page) -> None:
    sign_in(page, "viewer")
    page.goto("/services")
    instances = page.locator("#instances tbody tr")
    receiver = instances.filter(has_text="receiver")
    expect(receiver).to_have_count(1)
    # Other tests of the run keep storing revisions: the receiver catches up within a report or two (the
    # table refreshes itself every 5 s).
    expect(receiver.locator("td").nth(4)).to_contain_text("(latest)", timeout=30_000)
    expect(receiver.locator("td").nth(5)).to_have_text("ready")
    expect(receiver.locator("td").nth(6)).to_have_text("connected")
    screenshot(page, "services")


def test_auth_configs_history_and_audit_show_a_change_with_its_secrets_masked(page: Page) -> None:
    sign_in(page, "admin")
    code = unique("idp")
    page.goto("/auth-configs")
    page.get_by_label("Identifier").fill(code)
    page.get_by_label("Access Token URL").fill("not a url")
    page.get_by_label("Client ID").fill("client-identifier")
    page.get_by_label("Client Secret").fill("client-secret-value")
    page.get_by_role("button", name="Add").click()
    expect(page.locator("#f-access-token-url-error")).to_contain_text("is not an http:// or https:// URL")
    page.get_by_label("Access Token URL").fill("https://idp.example/token")
    page.get_by_label("Client ID").fill("client-identifier")
    page.get_by_label("Client Secret").fill("client-secret-value")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("heading", name=code)).to_be_visible()
    assert "client-secret-value" not in page.content()
    page.get_by_label("Scope").fill("read")
    page.get_by_role("button", name="Save").click()  # the secrets left empty are kept
    expect(page.get_by_label("Scope")).to_have_value("read")
    expect(page.locator("dd code").filter(has_text="••••alue")).to_be_visible()
    page.goto("/auth-configs")
    screenshot(page, "auth-configs")

    page.goto("/history")
    page.get_by_role("link", name=re.compile(r"^Revision \d+$")).first.click()
    expect(page.locator("table.changes").first).to_contain_text("auth_configs")
    screenshot(page, "revision")
    page.goto("/history")
    screenshot(page, "history")

    page.goto("/audit?object=auth-configs/" + code)
    expect(page.locator("#audit > tbody > tr")).to_have_count(2)
    assert "client-secret-value" not in page.content()
    screenshot(page, "audit")
