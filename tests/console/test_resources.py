"""The configuration resources: each write one revision, validated by the configuration's own models."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import ConsoleUnderTest, profile_text

GW = "/api/v1/forward-nodes/KARNAK-GW"
DICOM = {"id": "pacs", "type": "dicom", "ae_title": "PACS", "hostname": "pacs.example", "port": 104}
STOW = {"id": "kheops", "type": "stow", "url": "https://kheops.example/api/studies"}


def add_profile(app: ConsoleUnderTest, name: str = "basic") -> None:
    answer = app.post(
        f"/api/v1/profiles?name={name}", content=profile_text(), headers={"content-type": "application/x-yaml"}
    )
    assert answer.status_code == 201, answer.json()


def add_project(app: ConsoleUnderTest, name: str = "study-x", profile: str = "basic") -> dict[str, Any]:
    answer = app.post("/api/v1/projects", json={"name": name, "profile": profile})
    assert answer.status_code == 201, answer.json()
    result: dict[str, Any] = answer.json()
    return result


def test_a_destination_is_created_as_one_revision_and_reads_as_in_yaml(app: ConsoleUnderTest) -> None:
    before = app.get("/api/v1/configuration").json()["revision"]
    answer = app.post(f"{GW}/destinations", json=DICOM)
    assert answer.status_code == 201
    assert answer.json()["revision"] == before + 1
    assert app.get(f"{GW}/destinations/pacs").json()["item"] == DICOM
    revisions = app.get("/api/v1/revisions").json()
    assert revisions[0]["number"] == before + 1 and revisions[0]["origin"] == "api"
    assert revisions[0]["author"] == "token:test-admin"


def test_invalid_destination_answers_422_with_every_field_in_the_configurations_words(app: ConsoleUnderTest) -> None:
    bad = {**DICOM, "port": 70000, "ae_title": "A" * 17, "condition": "tagValueContains(", "colour": "red"}
    answer = app.post(f"{GW}/destinations", json=bad)
    assert answer.status_code == 422
    errors = {e["field"]: e["message"] for e in answer.json()["errors"]}
    here = "forward_nodes[0].destinations[0]"
    assert errors[f"{here}.port"] == "must be between 1 and 65535"
    assert errors[f"{here}.ae_title"] == "an AE title must have 1 to 16 characters"
    assert errors[f"{here}.condition"].startswith("invalid condition")
    assert errors[f"{here}.colour"] == "unknown field (check its spelling)"
    assert app.get(f"{GW}/destinations").json()["items"] == []


def test_tag_morphing_and_deidentification_together_are_refused(app: ConsoleUnderTest) -> None:
    add_profile(app)
    add_project(app)
    both = {**DICOM, "deidentification": {"project": "study-x"}, "tag_morphing": {"project": "study-x"}}
    answer = app.post(f"{GW}/destinations", json=both)
    assert answer.status_code == 422
    assert any("mutually exclusive" in e["message"] for e in answer.json()["errors"])


def test_a_duplicate_forward_node_is_refused_not_skipped(app: ConsoleUnderTest) -> None:
    answer = app.post("/api/v1/forward-nodes", json={"ae_title": "KARNAK-GW"})
    assert answer.status_code == 409
    assert answer.json()["errors"][0]["field"] == "ae_title"


def test_a_source_with_check_hostname_off_is_kept_as_written(app: ConsoleUnderTest) -> None:
    source = {"ae_title": "CT01", "hostname": "ct01.example", "check_hostname": False, "description": "CT"}
    assert app.post(f"{GW}/sources", json=source).status_code == 201
    assert app.get(f"{GW}/sources/CT01").json()["item"] == source


def test_a_project_secret_is_write_only_and_generated_once(app: ConsoleUnderTest) -> None:
    add_profile(app)
    created = add_project(app)
    secret = created["secret"]
    assert len(secret) == 32
    shown = app.get("/api/v1/projects/study-x").json()["item"]["secret"]
    assert shown == "••••" + secret[-4:]
    everything = str(app.get("/api/v1/configuration").json()) + str(app.get("/api/v1/audit").json())
    assert secret not in everything
    generated = app.post("/api/v1/projects/study-x/secret:generate").json()
    assert generated["secret"] != secret and len(generated["secret"]) == 32


def test_changing_a_secret_a_destination_uses_needs_confirm_and_says_why(app: ConsoleUnderTest) -> None:
    add_profile(app)
    add_project(app)
    app.post(f"{GW}/destinations", json={**DICOM, "deidentification": {"project": "study-x"}})
    refused = app.post("/api/v1/projects/study-x/secret:generate")
    assert refused.status_code == 409
    assert "KARNAK-GW/pacs" in refused.json()["detail"]
    assert "consistency of previously de-identified" in refused.json()["detail"]
    assert app.post("/api/v1/projects/study-x/secret:generate?confirm=true").status_code == 200
    # Sending the masked secret back changes nothing and needs no confirmation.
    project = app.get("/api/v1/projects/study-x").json()["item"]
    project.pop("used_by")
    kept = app.put("/api/v1/projects/study-x", json=project)
    assert kept.status_code == 200 and kept.json()["changed"] is False


def test_a_profile_used_by_a_project_cannot_be_deleted_and_the_refusal_names_it(app: ConsoleUnderTest) -> None:
    add_profile(app)
    add_project(app)
    refused = app.delete("/api/v1/profiles/basic")
    assert refused.status_code == 409
    assert "study-x" in refused.json()["detail"]
    download = app.get("/api/v1/profiles/basic/download")
    assert download.text == profile_text()
    assert download.headers["content-type"].startswith("application/x-yaml")


def test_profile_validation_lists_errors_per_element(app: ConsoleUnderTest) -> None:
    text = (
        "name: broken\nversion: '1'\nprofileElements:\n"
        "  - name: fine\n    codename: basic.dicom.profile\n"
        "  - name: wrong\n    codename: action.on.tags\n    arguments: {}\n"
    )
    check = app.post("/api/v1/profiles:validate", content=text, headers={"content-type": "application/x-yaml"}).json()
    assert check["valid"] is False
    assert [e["name"] for e in check["elements"]] == ["fine", "wrong"]
    assert check["elements"][0]["errors"] == [] and check["elements"][1]["errors"]
    upload = app.post("/api/v1/profiles", content=text, headers={"content-type": "application/x-yaml"})
    assert upload.status_code == 422
    unreadable = app.post("/api/v1/profiles:validate", content="{{{", headers={"content-type": "application/x-yaml"})
    assert "Unable to read uploaded YAML file" in unreadable.json()["errors"][0]["message"]


def test_a_project_naming_no_stored_profile_is_refused(app: ConsoleUnderTest) -> None:
    answer = app.post("/api/v1/projects", json={"name": "p", "profile": "nowhere"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "profile", "message": "no profile named 'nowhere' in profiles (upload it first)"}
    ]


def test_authorization_header_is_appended_then_refused_with_karnaks_wording(app: ConsoleUnderTest) -> None:
    app.post(f"{GW}/destinations", json={**STOW, "headers": {"X-Tenant": "radiology"}})
    url = f"{GW}/destinations/kheops/headers:authorization"
    assert app.post(url, json={"type": "bearer", "token": "s3cr3t-token-abcd"}).status_code == 200
    headers = app.get(f"{GW}/destinations/kheops").json()["item"]["headers"]
    assert headers["X-Tenant"].startswith("••••") and headers["Authorization"] == "••••abcd"
    again = app.post(url, json={"type": "basic", "username": "u", "password": "p"})
    assert again.status_code == 409
    assert again.json()["detail"].startswith("Cannot generate Authorization Header")
    # Both headers are sent: the validated configuration carries them.
    latest = app.console.store.latest()
    assert latest is not None
    routing = app.console.editor.validated(latest)
    dest = routing.destination("kheops")
    assert dest is not None and dest.type == "stow"
    assert dest.headers == {"X-Tenant": "radiology", "Authorization": "Bearer s3cr3t-token-abcd"}


def test_karnak_form_headers_get_a_second_pair(app: ConsoleUnderTest) -> None:
    app.post(f"{GW}/destinations", json={**STOW, "headers": "<key>X-Tenant</key><value>radiology</value>"})
    answer = app.post(
        f"{GW}/destinations/kheops/headers:authorization", json={"type": "basic", "username": "u", "password": "p"}
    )
    assert answer.status_code == 200
    shown = app.get(f"{GW}/destinations/kheops").json()["item"]["headers"]
    assert "<key>X-Tenant</key>" in shown and "<key>Authorization</key>" in shown and "dTpw" not in shown


def test_a_stale_if_match_on_the_whole_configuration_answers_412_with_the_current_revision(
    app: ConsoleUnderTest,
) -> None:
    read = app.get("/api/v1/configuration")
    document, etag = read.json()["document"], read.headers["etag"]
    app.post(f"{GW}/destinations", json=DICOM)
    stale = app.put("/api/v1/configuration", json=document, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["revision"] == int(etag.strip('"')) + 1
    assert app.put("/api/v1/configuration", json=document).status_code == 428


def test_a_dry_run_returns_the_diff_and_stores_nothing(app: ConsoleUnderTest) -> None:
    read = app.get("/api/v1/configuration").json()
    document = read["document"]
    document["forward_nodes"][0]["description"] = "main gateway"
    answer = app.put("/api/v1/configuration?dry_run=true", json=document, headers={"If-Match": str(read["revision"])})
    assert answer.status_code == 200
    assert (
        answer.json()["changes"]
        == [{"path": "forward_nodes[KARNAK-GW].description", "kind": "added", "before": None, "after": "main gateway"}]
        or answer.json()["changes"][0]["after"] == "main gateway"
    )
    assert app.get("/api/v1/configuration").json()["revision"] == read["revision"]


def test_a_write_based_on_an_old_revision_is_refused_with_409(app: ConsoleUnderTest) -> None:
    number = app.get("/api/v1/configuration").json()["revision"]
    app.post(f"{GW}/destinations", json=DICOM)
    late = app.post(f"{GW}/sources", json={"ae_title": "CT01"}, headers={"If-Match": str(number)})
    assert late.status_code == 409
    assert late.json()["revision"] == number + 1


def test_rollback_stores_a_new_revision_equal_to_the_old_one(app: ConsoleUnderTest) -> None:
    first = app.get("/api/v1/configuration").json()["revision"]
    app.post(f"{GW}/destinations", json=DICOM)
    rolled = app.post(f"/api/v1/revisions/{first}/rollback").json()
    assert rolled["revision"] == first + 2
    assert app.get(f"{GW}/destinations").json()["items"] == []
    assert app.get("/api/v1/revisions").json()[0]["origin"] == "rollback"
    diff = app.get(f"/api/v1/revisions/{first + 1}/diff").json()
    assert diff["base"] == first and diff["changes"]


def test_an_auth_config_secret_is_masked_editable_and_kept(app: ConsoleUnderTest) -> None:
    config = {
        "code": "idp",
        "access_token_url": "https://idp.example/token",
        "client_id": "karnak",
        "client_secret": "very-secret-9876",
    }
    assert app.post("/api/v1/auth-configs", json=config).status_code == 201
    shown = app.get("/api/v1/auth-configs/idp").json()["item"]
    assert shown["client_secret"] == "••••9876"
    edited = app.put("/api/v1/auth-configs/idp", json={**shown, "scope": "pseudonyms"})
    assert edited.status_code == 200
    latest = app.console.store.latest()
    assert latest is not None
    kept = app.console.editor.validated(latest).auth_configs[0]
    assert kept.client_secret.get_secret_value() == "very-secret-9876" and kept.scope == "pseudonyms"


def test_the_audit_lists_each_change_with_its_revision_and_masked_diff(app: ConsoleUnderTest) -> None:
    add_profile(app)
    created = add_project(app)
    app.post(f"{GW}/destinations", json=DICOM)
    entries = app.get("/api/v1/audit").json()
    assert [e["object"] for e in entries][:3] == [
        "forward-nodes/KARNAK-GW/destinations/pacs",
        "projects/study-x",
        "profiles/basic",
    ]
    assert all(e["origin"] == "api" and e["actor"] == "token:test-admin" and e["revision"] for e in entries[:3])
    assert created["secret"] not in str(entries)
    only = app.get("/api/v1/audit?object=projects/").json()
    assert [e["object"] for e in only] == ["projects/study-x"]


def test_a_viewer_reads_the_configuration_but_an_operator_cannot_change_it(app: ConsoleUnderTest) -> None:
    assert app.get("/api/v1/forward-nodes", role="viewer").status_code == 200
    assert app.post(f"{GW}/destinations", role="operator", json=DICOM).status_code == 403
    assert app.get("/api/v1/audit", role="viewer").status_code == 403
