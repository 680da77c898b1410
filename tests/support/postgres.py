"""A PostgreSQL database of one test's own, created on the local server and dropped after it.

Tests never share a database: branches of the schema (migrations not yet merged elsewhere) and rows of
another run never meet. The server is `$KARNAK_TEST_POSTGRES_ADMIN_URL` (a database the tests may connect
to in order to create others), by default the local one with trust authentication.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_URL = os.environ.get("KARNAK_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@localhost:5432/postgres")


@contextmanager
def fresh_database(purpose: str = "test") -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it (and its connections) afterwards."""
    name = f"karnak_{purpose}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is needed at {ADMIN_URL} ({exc}): start it with `pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start` (trust auth for user postgres) or set KARNAK_TEST_POSTGRES_ADMIN_URL"
        ) from None
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
