"""The `cache` pseudonym source and the CSV import/export of the pseudonym store, on SQLite and PostgreSQL.

PostgreSQL is the one on localhost (user postgres) or `KARNAK_TEST_POSTGRES_SERVER`; every test gets a database
of its own (tests.support.databases), so another branch's migrations in a shared database cannot break it.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from karnak_processor.pseudonyms import PseudonymMissing, PseudonymUnavailable, pseudonym_source
from karnak_shared.config import Pseudonym
from karnak_shared.database import PseudonymRecord, create_database_engine, open_database
from karnak_shared.pseudonym_store import PseudonymImportError, export_csv, import_csv, lookup_pseudonym
from tests.support.databases import database_url

pytestmark = pytest.mark.integration

SECRET = bytes.fromhex("0123456789abcdef0123456789abcdef")

SessionFactory = Callable[[], Session]


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionFactory]:
    try:
        with database_url(request.param, tmp_path) as url:
            factory = open_database(url)
            yield factory
            factory.kw["bind"].dispose()
    except RuntimeError as exc:  # PostgreSQL unreachable: say how to get it, never skip
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def project(sessions: SessionFactory) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    with sessions() as session, session.begin():
        session.execute(delete(PseudonymRecord).where(PseudonymRecord.project.in_([name, name + "-copy"])))


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def instance(**attributes: str) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def count(sessions: SessionFactory, project: str) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).where(PseudonymRecord.project == project)) or 0)


ENROLMENT = (
    "patient_id,issuer_of_patient_id,pseudonym\n"
    "PAT-1,HOSP-A,SUBJ-001\n"
    "PAT-1,HOSP-B,SUBJ-002\n"
    "PAT-2,,SUBJ-003\n"
    "PAT-3,DEFAULT,SUBJ-004\n"
)


def test_cache_finds_the_pseudonym_by_patient_id_and_issuer(
    sessions: SessionFactory, project: str, tmp_path: Path
) -> None:
    assert import_csv(sessions, project, write(tmp_path / "enrolment.csv", ENROLMENT)) == 4
    source = pseudonym_source(Pseudonym(type="cache"), SECRET, sessions, "DEFAULT", project=project)

    assert source.pseudonym_for(instance(PatientID="PAT-1", IssuerOfPatientID="HOSP-A")) == "SUBJ-001"
    assert source.pseudonym_for(instance(PatientID="PAT-1", IssuerOfPatientID="HOSP-B")) == "SUBJ-002"
    # No issuer in the instance: the destination's default issuer stands in.
    assert source.pseudonym_for(instance(PatientID="PAT-3")) == "SUBJ-004"
    assert source.pseudonym_for(instance(PatientID="PAT-3", IssuerOfPatientID="")) == "SUBJ-004"
    # Without a default issuer, the patient imported without an issuer.
    without_default = pseudonym_source(Pseudonym(type="cache"), SECRET, sessions, None, project=project)
    assert without_default.pseudonym_for(instance(PatientID=" PAT-2 ")) == "SUBJ-003"


def test_a_miss_is_missing_with_a_reason_naming_the_project_and_no_patient_data(
    sessions: SessionFactory, project: str, tmp_path: Path
) -> None:
    import_csv(sessions, project, write(tmp_path / "enrolment.csv", ENROLMENT))
    source = pseudonym_source(Pseudonym(type="cache"), SECRET, sessions, "DEFAULT", project=project)

    with pytest.raises(PseudonymMissing) as caught:
        source.pseudonym_for(instance(PatientID="PAT-1", IssuerOfPatientID="HOSP-C"))

    assert caught.value.reason == (
        "no pseudonym for this patient (with the issuer of patient id given) "
        f"in the pseudonym cache of project {project}"
    )
    assert "PAT-1" not in str(caught.value) and "HOSP-C" not in str(caught.value)
    with pytest.raises(PseudonymMissing, match=r"no PatientID"):
        source.pseudonym_for(instance(PatientName="Doe^John"))


def test_projects_keep_their_own_pseudonyms(sessions: SessionFactory, project: str, tmp_path: Path) -> None:
    import_csv(sessions, project, write(tmp_path / "a.csv", "patient_id,pseudonym\nPAT-1,A-1\n"))
    import_csv(sessions, project + "-copy", write(tmp_path / "b.csv", "patient_id,pseudonym\nPAT-1,B-1\n"))

    assert lookup_pseudonym(sessions, project, "PAT-1", "") == "A-1"
    assert lookup_pseudonym(sessions, project + "-copy", "PAT-1", "") == "B-1"


def test_csv_export_then_import_round_trips(sessions: SessionFactory, project: str, tmp_path: Path) -> None:
    # Excel's way: a byte order mark, semicolons and its own column names.
    excel = "\ufeffPatientID;IssuerOfPatientID;Pseudonym\r\nPAT-2;;SUBJ-003\r\nPAT-1;HOSP-A;SUBJ-001\r\n"
    excel += "PAT-Ü;X;SUBJ-Ü\r\n"
    assert import_csv(sessions, project, write(tmp_path / "excel.csv", excel)) == 3
    exported = io.StringIO()

    assert export_csv(sessions, project, exported) == 3

    assert exported.getvalue() == (
        "patient_id,issuer_of_patient_id,pseudonym\nPAT-1,HOSP-A,SUBJ-001\nPAT-2,,SUBJ-003\nPAT-Ü,X,SUBJ-Ü\n"
    )
    copy = tmp_path / "export.csv"
    assert export_csv(sessions, project, copy) == 3
    assert import_csv(sessions, project + "-copy", copy) == 3
    again = io.StringIO()
    export_csv(sessions, project + "-copy", again)
    assert again.getvalue() == exported.getvalue()


def test_importing_a_known_patient_replaces_its_pseudonym(
    sessions: SessionFactory, project: str, tmp_path: Path
) -> None:
    import_csv(sessions, project, write(tmp_path / "first.csv", "patient_id,pseudonym\nPAT-1,OLD-1\nPAT-2,OLD-2\n"))

    imported = import_csv(sessions, project, write(tmp_path / "second.csv", "pseudonym,patient_id\nNEW-1,PAT-1\n"))

    assert imported == 1
    assert lookup_pseudonym(sessions, project, "PAT-1", "") == "NEW-1"
    assert lookup_pseudonym(sessions, project, "PAT-2", "") == "OLD-2"
    assert count(sessions, project) == 2


def test_thousands_of_patients_import_in_batches(sessions: SessionFactory, project: str, tmp_path: Path) -> None:
    lines = "".join(f"PAT-{n:05d},HOSP,SUBJ-{n:05d}\n" for n in range(2500))

    assert import_csv(sessions, project, write(tmp_path / "many.csv", "patient_id,issuer,pseudonym\n" + lines)) == 2500

    assert count(sessions, project) == 2500
    assert lookup_pseudonym(sessions, project, "PAT-02499", "HOSP") == "SUBJ-02499"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "patient;name\nPAT-1;Doe\n",
            [
                "line 1: the header has no patient_id column (found 'patient', 'name')",
                "line 1: the header has no pseudonym column (found 'patient', 'name')",
            ],
        ),
        ("patient_id,pseudonym\nPAT-5,SUBJ-5\nPAT-1\n", ["line 3: 1 fields where the header has 2"]),
        (
            "patient_id,pseudonym\n,SUBJ-1\nPAT-5,SUBJ-5\nPAT-2,\n",
            ["line 2: empty patient_id", "line 4: empty pseudonym"],
        ),
        (
            "patient_id,pseudonym\nPAT-1,SUBJ-1\nPAT-5,SUBJ-5\nPAT-1,SUBJ-2\n",
            ["line 4: same patient as line 2 with another pseudonym"],
        ),
        (
            "patient_id,pseudonym\nPAT-1,SUBJ-1\nPAT-5,SUBJ-5\nPAT-2,SUBJ-1\n",
            ["line 4: same pseudonym as line 2 for another patient"],
        ),
        ("patient_id,pseudonym\nPAT-5,SUBJ-5\nPAT-1," + "S" * 65 + "\n", ["line 3: pseudonym longer than 64"]),
        ("patient_id,pseudonym\nPAT-5,SUBJ-5\nPAT-1,SUBJ\\1\n", ["line 3: pseudonym contains a backslash"]),
        ("patient_id,pseudonym\n", ["the file has a header but no patient"]),
        ("", ["the file is empty"]),
    ],
)
def test_a_wrong_file_imports_nothing_and_names_lines_not_values(
    sessions: SessionFactory, project: str, tmp_path: Path, text: str, problems: list[str]
) -> None:
    import_csv(sessions, project, write(tmp_path / "before.csv", "patient_id,pseudonym\nPAT-9,SUBJ-9\n"))

    with pytest.raises(PseudonymImportError) as caught:
        import_csv(sessions, project, write(tmp_path / "wrong.csv", text))

    for problem in problems:
        assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems
    assert len(caught.value.problems) == len(problems)
    assert "PAT-1" not in str(caught.value) and "SUBJ-1" not in str(caught.value)
    assert count(sessions, project) == 1  # all or nothing: PAT-5, a good line, is not imported either


def test_a_pseudonym_the_cache_gives_another_patient_is_refused_unless_that_patient_gets_a_new_one(
    sessions: SessionFactory, project: str, tmp_path: Path
) -> None:
    import_csv(sessions, project, write(tmp_path / "first.csv", "patient_id,pseudonym\nPAT-1,SUBJ-1\n"))

    taken = f"line 2: the pseudonym is already given to another patient in project {project}"
    with pytest.raises(PseudonymImportError, match=taken):
        import_csv(sessions, project, write(tmp_path / "taken.csv", "patient_id,pseudonym\nPAT-2,SUBJ-1\n"))

    swap = "patient_id,pseudonym\nPAT-2,SUBJ-1\nPAT-1,SUBJ-9\n"
    assert import_csv(sessions, project, write(tmp_path / "swap.csv", swap)) == 2
    assert lookup_pseudonym(sessions, project, "PAT-1", "") == "SUBJ-9"
    assert lookup_pseudonym(sessions, project, "PAT-2", "") == "SUBJ-1"


def test_a_file_that_is_not_utf8_or_missing_is_refused(sessions: SessionFactory, project: str, tmp_path: Path) -> None:
    with pytest.raises(PseudonymImportError, match=r"not UTF-8"):
        import_csv(sessions, project, write(tmp_path / "latin1.csv", "patient_id,pseudonym\nPAT-Ü,S\n", "latin-1"))
    with pytest.raises(PseudonymImportError, match=r"cannot read the file"):
        import_csv(sessions, project, tmp_path / "absent.csv")


def test_an_unreachable_database_is_a_transient_failure_naming_no_patient() -> None:
    engine = create_database_engine("postgresql://postgres@127.0.0.1:9/test")
    factory = sessionmaker(engine)
    source = pseudonym_source(Pseudonym(type="cache"), SECRET, factory, "DEFAULT", project="study-x")

    with pytest.raises(PseudonymUnavailable, match=r"pseudonym cache of project study-x cannot be read") as caught:
        source.pseudonym_for(instance(PatientID="PAT-SECRET-1"))

    assert "PAT-SECRET-1" not in str(caught.value)
    assert caught.value.transient
    engine.dispose()
