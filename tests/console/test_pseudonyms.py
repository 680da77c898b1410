"""A project's pseudonyms through the API: CSV import with a column mapping, repeats reported, lookup, delete."""

from __future__ import annotations

from tests.console.conftest import ConsoleUnderTest, profile_text

CSV = (
    "Ext;PID;Issuer;First;Last\n"
    "SUBJ-001;PAT-1;HOSP;Ada;Lovelace\n"
    "SUBJ-002;PAT-2;;Alan;Turing\n"
    "SUBJ-002;PAT-2;;Alan;Turing\n"
)
MAPPING = "pseudonym=Ext&patient_id=PID&issuer_of_patient_id=Issuer&first_name=First&last_name=Last&delimiter=;"


def project(app: ConsoleUnderTest) -> str:
    app.post("/api/v1/profiles?name=basic", content=profile_text(), headers={"content-type": "application/x-yaml"})
    assert app.post("/api/v1/projects", json={"name": "study-x", "profile": "basic"}).status_code == 201
    return "/api/v1/projects/study-x/pseudonyms"


def test_a_mapped_csv_import_keeps_the_names_and_reports_repeats(app: ConsoleUnderTest) -> None:
    base = project(app)
    first = app.post(f"{base}:import?{MAPPING}", role="operator", content=CSV, headers={"content-type": "text/csv"})
    assert first.status_code == 200, first.json()
    assert first.json() == {"imported": 2, "duplicates": {"unchanged": [], "replaced": [], "repeated": [4]}}
    again = app.post(f"{base}:import?{MAPPING}", role="operator", content=CSV, headers={"content-type": "text/csv"})
    assert again.json()["duplicates"]["unchanged"] == [2, 3]
    found = app.get(f"{base}?patient_id=PAT-1&issuer_of_patient_id=HOSP", role="operator").json()
    assert found == [
        {
            "patient_id": "PAT-1",
            "issuer_of_patient_id": "HOSP",
            "pseudonym": "SUBJ-001",
            "first_name": "Ada",
            "last_name": "Lovelace",
        }
    ]
    exported = app.get(f"{base}:export", role="operator").text
    assert exported.splitlines()[0] == "patient_id,issuer_of_patient_id,pseudonym,first_name,last_name"
    assert "PAT-2,,SUBJ-002,Alan,Turing" in exported


def test_a_mapping_without_the_mandatory_columns_names_them(app: ConsoleUnderTest) -> None:
    base = project(app)
    answer = app.post(f"{base}:import?pseudonym=Ext", content=CSV, headers={"content-type": "text/csv"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "These fields are not selected: patient_id"


def test_deleting_pseudonyms_needs_confirmation_and_says_how_many(app: ConsoleUnderTest) -> None:
    base = project(app)
    app.post(f"{base}:import?{MAPPING}", content=CSV, headers={"content-type": "text/csv"})
    selected = {"keys": [{"patient_id": "PAT-1", "issuer_of_patient_id": "HOSP"}]}
    refused = app.post(f"{base}:delete", json=selected)
    assert refused.status_code == 409 and "1 selected patient" in refused.json()["detail"]
    assert app.post(f"{base}:delete?confirm=true", json=selected).json() == {"count": 1}
    assert app.post(f"{base}:delete?confirm=true", json={"all": True}).json() == {"count": 1}
    assert app.get(base).json() == []


def test_a_viewer_sees_no_patient_identifier(app: ConsoleUnderTest) -> None:
    base = project(app)
    assert app.get(base, role="viewer").status_code == 403
    entries = app.get("/api/v1/audit").json()
    assert "PAT-1" not in str(entries)


def test_editing_an_entry_replaces_its_key_and_refuses_a_pseudonym_of_another_patient(app: ConsoleUnderTest) -> None:
    base = project(app)
    app.post(f"{base}:import?{MAPPING}", content=CSV, headers={"content-type": "text/csv"})
    taken = {
        "key": {"patient_id": "PAT-1", "issuer_of_patient_id": "HOSP"},
        "entry": {"patient_id": "PAT-1", "issuer_of_patient_id": "HOSP", "pseudonym": "SUBJ-002"},
    }
    refused = app.post(f"{base}:edit", role="operator", json=taken)
    assert refused.status_code == 409 and refused.json()["errors"][0]["field"] == "pseudonym"
    moved = {
        "key": {"patient_id": "PAT-1", "issuer_of_patient_id": "HOSP"},
        "entry": {"patient_id": "PAT-9", "pseudonym": "SUBJ-009"},
    }
    assert app.post(f"{base}:edit", role="operator", json=moved).json() == {"count": 1}
    entries = app.get(base, role="operator").json()
    assert [(e["patient_id"], e["pseudonym"]) for e in entries] == [("PAT-2", "SUBJ-002"), ("PAT-9", "SUBJ-009")]
    assert app.post(f"{base}:edit", role="viewer", json=moved).status_code == 403
