"""Alembic environment: migrations run on the connection handed over by `karnak_shared.database`."""

from __future__ import annotations

from alembic import context

from karnak_shared.database import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through karnak_shared.database.upgrade_schema (karnak db upgrade)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Several services may start at once: one migrates, the others wait.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4711)")
    context.run_migrations()
