"""The pseudonym cache of each project in the SQL database: lookups, and CSV import and export.

A project's cache maps (PatientID, IssuerOfPatientID) to the pseudonym a data manager chose, e.g. from a
study's enrolment list. `karnak pseudonyms import FILE.csv --project P` fills it and `export` writes it back.

The CSV file has a header row naming its columns, in any order and any case, with or without spaces or
underscores: ``patient_id`` (or ``PatientID``), ``pseudonym``, and optionally ``issuer_of_patient_id`` (or
``IssuerOfPatientID``, ``issuer``). Commas, semicolons and tabs are recognised as separators; a UTF-8 byte
order mark (as Excel writes) is skipped. Values are trimmed, as DICOM trims LO values. An import is all or
nothing: a file with any wrong line changes nothing, and its errors name line numbers and columns, never
values, because the values identify patients. Importing a patient already in the cache replaces its
pseudonym.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from karnak_shared.database import PseudonymRecord
from karnak_shared.errors import KarnakError

__all__ = [
    "PSEUDONYM_MAX_LENGTH",
    "ImportReport",
    "PseudonymEntry",
    "PseudonymImportError",
    "delete_pseudonyms",
    "export_csv",
    "import_csv",
    "import_text",
    "list_pseudonyms",
    "lookup_pseudonym",
    "store_pseudonyms",
]

SessionFactory = Callable[[], Session]

# The pseudonym becomes PatientName and ClinicalTrialSubjectID (LO): 64 characters at most.
PSEUDONYM_MAX_LENGTH: Final = 64
# Lengths of the table's columns (see migrations/versions/0001).
_KEY_MAX_LENGTH: Final = 256
_BATCH: Final = 1000
_COLUMNS: Final = {
    "patientid": "patient_id",
    "pseudonym": "pseudonym",
    "issuerofpatientid": "issuer_of_patient_id",
    "issuer": "issuer_of_patient_id",
    "patientfirstname": "first_name",
    "firstname": "first_name",
    "patientlastname": "last_name",
    "lastname": "last_name",
}
FIELDS: Final = ("patient_id", "pseudonym", "issuer_of_patient_id", "first_name", "last_name")
EXPORT_HEADER: Final = ("patient_id", "issuer_of_patient_id", "pseudonym")


class PseudonymImportError(KarnakError):
    """A pseudonym file cannot be imported; `problems` name the lines and columns, never the values."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__(f"{source}: nothing imported:\n" + "\n".join(shown))


@dataclass(frozen=True)
class PseudonymEntry:
    """One patient's pseudonym; `issuer_of_patient_id` is "" when the patient id has no issuer."""

    patient_id: str
    issuer_of_patient_id: str
    pseudonym: str
    # Kept for the people who manage the list (Karnak's import dropped them); never put in an instance.
    first_name: str = ""
    last_name: str = ""


@dataclass
class ImportReport:
    """What an import did: how many patients, and the lines that repeat a patient already known."""

    imported: int = 0
    # Lines whose patient was already in the cache: with the same pseudonym, or given a new one.
    unchanged: list[int] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    # Lines repeating an earlier line of the same file (same patient, same pseudonym): taken once.
    repeated: list[int] = field(default_factory=list)


def lookup_pseudonym(session_factory: SessionFactory, project: str, patient_id: str, issuer: str) -> str | None:
    """The pseudonym cached for the patient in the project, or None."""
    with session_factory() as session:
        record = session.get(PseudonymRecord, (project, patient_id, issuer))
        return None if record is None else record.pseudonym


def store_pseudonyms(
    session_factory: SessionFactory,
    project: str,
    entries: Iterable[PseudonymEntry],
    on_stored: Callable[[int], None] | None = None,
) -> int:
    """Insert or replace the entries in the project's cache, in one transaction; returns how many.

    `on_stored` is told the size of each batch written (the transaction commits only at the end).
    """
    count = 0
    with session_factory() as session, session.begin():
        batch: list[dict[str, Any]] = []
        for entry in entries:
            batch.append(
                {
                    "project": project,
                    "patient_id": entry.patient_id,
                    "issuer_of_patient_id": entry.issuer_of_patient_id,
                    "pseudonym": entry.pseudonym,
                    "first_name": entry.first_name or None,
                    "last_name": entry.last_name or None,
                }
            )
            if len(batch) >= _BATCH:
                count += _upsert(session, batch)
                if on_stored is not None:
                    on_stored(len(batch))
                batch = []
        if batch:
            count += _upsert(session, batch)
            if on_stored is not None:
                on_stored(len(batch))
    return count


def import_csv(
    session_factory: SessionFactory,
    project: str,
    path: str | os.PathLike[str],
    on_total: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> int:
    """Import a CSV file of pseudonyms into the project's cache; returns the number of patients imported.

    Raises `PseudonymImportError` (and imports nothing) when the file has a problem. `on_total` is told the
    number of rows once the file is parsed, `on_stored` each batch written.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PseudonymImportError(source, ["the file is not UTF-8 text"]) from None
    except OSError as exc:
        raise PseudonymImportError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    return import_text(session_factory, project, text, source, on_total=on_total, on_stored=on_stored).imported


def import_text(
    session_factory: SessionFactory,
    project: str,
    text: str,
    source: str,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    on_total: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import CSV text; `mapping` names the column (header text) of each field instead of recognising them.

    All or nothing, as `import_csv`; the report lists the lines that repeat a known patient.
    """
    report = ImportReport()
    entries = _parse(text.removeprefix("\ufeff"), source, mapping, delimiter, report)
    with session_factory() as session:
        existing = {
            (row.patient_id, row.issuer_of_patient_id): row.pseudonym
            for row in session.execute(
                select(
                    PseudonymRecord.patient_id, PseudonymRecord.issuer_of_patient_id, PseudonymRecord.pseudonym
                ).where(PseudonymRecord.project == project)
            )
        }
    _check_against_cache(entries, existing, source, project)
    for line, entry in entries:
        known = existing.get((entry.patient_id, entry.issuer_of_patient_id))
        if known is not None:
            (report.unchanged if known == entry.pseudonym else report.replaced).append(line)
    if on_total is not None:
        on_total(len(entries))
    report.imported = store_pseudonyms(session_factory, project, (entry for _, entry in entries), on_stored)
    return report


def export_csv(
    session_factory: SessionFactory,
    project: str,
    path_or_stream: str | os.PathLike[str] | TextIO,
    include_names: bool = False,
) -> int:
    """Write the project's cache as CSV (the import format, sorted by patient); returns the number of patients."""
    with _text_output(path_or_stream) as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(EXPORT_HEADER + (("first_name", "last_name") if include_names else ()))
        count = 0
        for entry in list_pseudonyms(session_factory, project, limit=None):
            row = (entry.patient_id, entry.issuer_of_patient_id, entry.pseudonym)
            writer.writerow(row + ((entry.first_name, entry.last_name) if include_names else ()))
            count += 1
    return count


def export_json(session_factory: SessionFactory, project: str, path_or_stream: str | os.PathLike[str] | TextIO) -> int:
    """Write the project's cache as a JSON array of {patient_id, issuer_of_patient_id, pseudonym}, sorted."""
    entries = [
        {"patient_id": patient_id, "issuer_of_patient_id": issuer, "pseudonym": pseudonym}
        for patient_id, issuer, pseudonym in (
            (e.patient_id, e.issuer_of_patient_id, e.pseudonym)
            for e in list_pseudonyms(session_factory, project, limit=None)
        )
    ]
    with _text_output(path_or_stream) as stream:
        json.dump(entries, stream, indent=2)
        stream.write("\n")
    return len(entries)


def list_pseudonyms(
    session_factory: SessionFactory,
    project: str,
    *,
    contains: str | None = None,
    pseudonym: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[PseudonymEntry]:
    """The project's entries sorted by patient; `contains` filters on any column, `pseudonym` finds its patient."""
    query = (
        select(PseudonymRecord)
        .where(PseudonymRecord.project == project)
        .order_by(PseudonymRecord.patient_id, PseudonymRecord.issuer_of_patient_id)
        .offset(offset)
    )
    if pseudonym is not None:
        query = query.where(PseudonymRecord.pseudonym == pseudonym)
    if contains:
        escaped = contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        columns = (
            PseudonymRecord.patient_id,
            PseudonymRecord.pseudonym,
            PseudonymRecord.issuer_of_patient_id,
            PseudonymRecord.first_name,
            PseudonymRecord.last_name,
        )
        query = query.where(or_(*(column.like(pattern, escape="\\") for column in columns)))
    if limit is not None:
        query = query.limit(limit)
    with session_factory() as session:
        return [
            PseudonymEntry(r.patient_id, r.issuer_of_patient_id, r.pseudonym, r.first_name or "", r.last_name or "")
            for r in session.scalars(query)
        ]


def delete_pseudonyms(session_factory: SessionFactory, project: str, keys: list[tuple[str, str]] | None) -> int:
    """Delete the given (patient id, issuer) entries of the project, or all of them with `keys=None`."""
    from sqlalchemy import delete, tuple_

    statement = delete(PseudonymRecord).where(PseudonymRecord.project == project)
    if keys is not None:
        if not keys:
            return 0
        statement = statement.where(tuple_(PseudonymRecord.patient_id, PseudonymRecord.issuer_of_patient_id).in_(keys))
    with session_factory() as session, session.begin():
        return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


# --- parsing ----------------------------------------------------------------------------------------------


def _column_key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def recognised_field(column: str) -> str | None:
    """The field a CSV header names by itself (`Patient ID`, `issuer`, `pseudonym`...), or None."""
    return _COLUMNS.get(_column_key(column))


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    header = text.split("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(header, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def _parse(
    text: str,
    source: str,
    mapping: dict[str, str] | None = None,
    delimiter: str | None = None,
    report: ImportReport | None = None,
) -> list[tuple[int, PseudonymEntry]]:
    """The entries with their line numbers; raises PseudonymImportError listing every problem."""
    if not text.strip():
        raise PseudonymImportError(source, ["the file is empty (a header row and one line per patient expected)"])
    reader = (
        csv.reader(io.StringIO(text), _dialect(text))
        if delimiter is None
        else csv.reader(io.StringIO(text), csv.excel, delimiter=delimiter)
    )
    header = next(reader)
    columns: dict[str, int] = {}
    problems: list[str] = []
    if mapping is not None:
        names = [name.strip() for name in header]
        for wanted, column in mapping.items():
            if wanted not in FIELDS:
                problems.append(f"mapping: {wanted!r} is not one of {', '.join(FIELDS)}")
            elif column.strip() not in names:
                problems.append(f"mapping: {wanted} names column {column!r}, which the header does not have")
            else:
                columns[wanted] = names.index(column.strip())
    else:
        for index, name in enumerate(header):
            field_name = recognised_field(name)
            if field_name is None:
                continue
            if field_name in columns:
                problems.append(f"line 1: column {index + 1} ({name.strip()}) repeats column {columns[field_name] + 1}")
            columns.setdefault(field_name, index)
    for required in ("patient_id", "pseudonym"):
        if required not in columns:
            found = ", ".join(repr(name.strip()) for name in header)
            problems.append(f"line 1: the header has no {required} column (found {found})")
    if problems:
        raise PseudonymImportError(source, problems)

    entries: list[tuple[int, PseudonymEntry]] = []
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    owners: dict[str, tuple[int, tuple[str, str]]] = {}
    for fields in reader:
        line = reader.line_num
        if not any(value.strip() for value in fields):
            continue
        if len(fields) < len(header):
            problems.append(f"line {line}: {len(fields)} fields where the header has {len(header)}")
            continue
        patient_id = fields[columns["patient_id"]].strip()
        pseudonym = fields[columns["pseudonym"]].strip()
        issuer = fields[columns["issuer_of_patient_id"]].strip() if "issuer_of_patient_id" in columns else ""
        first = fields[columns["first_name"]].strip()[:_KEY_MAX_LENGTH] if "first_name" in columns else ""
        last = fields[columns["last_name"]].strip()[:_KEY_MAX_LENGTH] if "last_name" in columns else ""
        line_problems = _check_values(patient_id, issuer, pseudonym)
        if line_problems:
            problems.extend(f"line {line}: {problem}" for problem in line_problems)
            continue
        key = (patient_id, issuer)
        if key in seen:
            first_line, first_pseudonym = seen[key]
            if first_pseudonym != pseudonym:
                problems.append(f"line {line}: same patient as line {first_line} with another pseudonym")
            elif report is not None:
                report.repeated.append(line)
            continue
        if pseudonym in owners:
            problems.append(f"line {line}: same pseudonym as line {owners[pseudonym][0]} for another patient")
            continue
        seen[key] = (line, pseudonym)
        owners[pseudonym] = (line, key)
        entries.append((line, PseudonymEntry(patient_id, issuer, pseudonym, first, last)))
    if problems:
        raise PseudonymImportError(source, problems)
    if not entries:
        raise PseudonymImportError(source, ["the file has a header but no patient"])
    return entries


def _check_values(patient_id: str, issuer: str, pseudonym: str) -> list[str]:
    problems: list[str] = []
    if not patient_id:
        problems.append("empty patient_id")
    if not pseudonym:
        problems.append("empty pseudonym")
    if len(patient_id) > _KEY_MAX_LENGTH:
        problems.append(f"patient_id longer than {_KEY_MAX_LENGTH} characters")
    if len(issuer) > _KEY_MAX_LENGTH:
        problems.append(f"issuer_of_patient_id longer than {_KEY_MAX_LENGTH} characters")
    if len(pseudonym) > PSEUDONYM_MAX_LENGTH:
        problems.append(f"pseudonym longer than {PSEUDONYM_MAX_LENGTH} characters (it becomes the PatientName)")
    if "\\" in pseudonym or any(ord(c) < 32 for c in pseudonym):
        problems.append("pseudonym contains a backslash or a control character")
    return problems


def _check_against_cache(
    entries: list[tuple[int, PseudonymEntry]], existing: dict[tuple[str, str], str], source: str, project: str
) -> None:
    """Refuse a pseudonym that, after the import, two patients would share: they would become one."""
    final = dict(existing)
    for _, entry in entries:
        final[(entry.patient_id, entry.issuer_of_patient_id)] = entry.pseudonym
    holders: dict[str, int] = {}
    for pseudonym in final.values():
        holders[pseudonym] = holders.get(pseudonym, 0) + 1
    problems = [
        f"line {line}: the pseudonym is already given to another patient in project {project}"
        for line, entry in entries
        if holders[entry.pseudonym] > 1
    ]
    if problems:
        raise PseudonymImportError(source, problems)


# --- database and files -----------------------------------------------------------------------------------


def _upsert(session: Session, batch: list[dict[str, Any]]) -> int:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        pg_statement = postgresql_insert(PseudonymRecord)
        session.execute(
            pg_statement.on_conflict_do_update(
                index_elements=["project", "patient_id", "issuer_of_patient_id"],
                set_={
                    "pseudonym": pg_statement.excluded.pseudonym,
                    "first_name": pg_statement.excluded.first_name,
                    "last_name": pg_statement.excluded.last_name,
                },
            ),
            batch,
        )
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite_statement = sqlite_insert(PseudonymRecord)
        session.execute(
            lite_statement.on_conflict_do_update(
                index_elements=["project", "patient_id", "issuer_of_patient_id"],
                set_={
                    "pseudonym": lite_statement.excluded.pseudonym,
                    "first_name": lite_statement.excluded.first_name,
                    "last_name": lite_statement.excluded.last_name,
                },
            ),
            batch,
        )
    else:
        for values in batch:
            session.merge(PseudonymRecord(**values))
    return len(batch)


@contextmanager
def _text_output(path_or_stream: str | os.PathLike[str] | TextIO) -> Iterator[TextIO]:
    if isinstance(path_or_stream, str | os.PathLike):
        with open(path_or_stream, "w", encoding="utf-8", newline="") as stream:
            yield stream
    else:
        yield path_or_stream
