"""Real SQL databases for tests: a PostgreSQL database of the test's own (created, then dropped) or SQLite.

The PostgreSQL server is the one on localhost (user postgres, trust auth) or `KARNAK_TEST_POSTGRES_SERVER`
(a URL without a database name). A test never touches a database it did not create.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

POSTGRES_SERVER = os.environ.get("KARNAK_TEST_POSTGRES_SERVER", "postgresql+psycopg://postgres@localhost:5432")


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database named `karnak_test_<random>`, dropped afterwards."""
    name = f"karnak_test_{uuid.uuid4().hex[:12]}"
    server = create_engine(f"{POSTGRES_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        server.dispose()
        raise RuntimeError(
            f"PostgreSQL is not reachable at {POSTGRES_SERVER} ({type(exc).__name__}): start it (apt-get install "
            "postgresql; pg_ctlcluster 15 main start; trust auth for user postgres) or set "
            "KARNAK_TEST_POSTGRES_SERVER"
        ) from None
    try:
        yield f"{POSTGRES_SERVER}/{name}".replace("postgresql+psycopg://", "postgresql://")
    finally:
        with server.connect() as connection:
            # FORCE: a connection a failed test left open must not keep the database alive.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@contextmanager
def database_url(kind: str, folder: Path) -> Iterator[str]:
    """A fresh database of `kind` (``sqlite`` or ``postgresql``) for one test."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'karnak.db'}"
        return
    with postgres_database() as url:
        yield url
