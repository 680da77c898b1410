"""The gateway's SQL storage (SQLAlchemy 2, migrations by Alembic): SQLite by default, PostgreSQL in production.

Tables:
- ``pseudonyms``: the pseudonym cache of each project, keyed by (project, patient id, issuer of patient id).
- ``kheops_shares``: which series were shared into which Kheops album, so each is shared once.
- ``config_revisions``: the routing configuration's immutable revisions (DESIGN.md section 14), written
  and read by `karnak_shared.revisions`.
- ``transfer_series``, ``transfer_instances``, ``transfer_reasons``, ``monitor_events``: what happened to
  every series per destination (DESIGN.md section 16), written by the monitor, read by the console.

Every service that uses the database calls `open_database`, which brings the schema to the latest
migration first (Alembic takes a lock on PostgreSQL, so concurrent start-ups are safe).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from karnak_shared.errors import ConfigError

MIGRATIONS = Path(__file__).with_name("migrations")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class PseudonymRecord(Base):
    """One patient's pseudonym within a project."""

    __tablename__ = "pseudonyms"

    project: Mapped[str] = mapped_column(String(128), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(String(256), primary_key=True, default="")
    pseudonym: Mapped[str] = mapped_column(String(256))
    first_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    last_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class KheopsShare(Base):
    """A series shared into a Kheops album (album identified by its destination and position)."""

    __tablename__ = "kheops_shares"

    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    album: Mapped[str] = mapped_column(String(512), primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    shared_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


# Who or what stored a revision. `file`: the configuration file changed (configuration.source: file).
REVISION_ORIGINS = ("console", "api", "apply", "bootstrap", "rollback", "file")


class ConfigRevisionRecord(Base):
    """One revision of the routing configuration; never updated or deleted (triggers refuse both)."""

    __tablename__ = "config_revisions"
    __table_args__ = (
        CheckConstraint(
            "origin IN (" + ", ".join(f"'{origin}'" for origin in REVISION_ORIGINS) + ")",
            name="config_revisions_origin",
        ),
    )

    # Numbered 1, 2, ... by the writer; the primary key makes two writers of the same number collide.
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    author: Mapped[str] = mapped_column(String(256))
    origin: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text, default="")
    # The routing document, its secrets encrypted or as ${ENV}/${file:} references.
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    checksum: Mapped[str] = mapped_column(String(71))


class TransferSeriesRecord(Base):
    """One series of one forward node sent (or not) to one destination: what the monitoring page lists."""

    __tablename__ = "transfer_series"
    __table_args__ = (
        UniqueConstraint("forward_node", "destination", "series_uid", name="transfer_series_key"),
        Index("transfer_series_last_seen", "last_seen"),
        Index("transfer_series_study", "study_uid"),
        Index("transfer_series_study_sent", "study_uid_sent"),
        Index("transfer_series_series_sent", "series_uid_sent"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    forward_node: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str] = mapped_column(String(64))
    # Original identifiers (as received) and as sent (after de-identification, when the destination does it).
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    study_uid_sent: Mapped[str] = mapped_column(String(64), default="")
    series_uid_sent: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accession_number: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patient_id_sent: Mapped[str] = mapped_column(String(64), default="")
    accession_number_sent: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    sop_classes: Mapped[str] = mapped_column(Text, default="")
    instances: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    # Instances still waiting for a retry: retried, with no final outcome yet.
    retrying: Mapped[int] = mapped_column(Integer, default=0)
    deidentified: Mapped[bool] = mapped_column(Boolean, default=False)
    tag_morphed: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class TransferInstanceRecord(Base):
    """The last outcome of one SOP instance in a series row (so counts are of instances, not events)."""

    __tablename__ = "transfer_instances"

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("transfer_series.id", ondelete="CASCADE"), primary_key=True
    )
    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))
    at: Mapped[float] = mapped_column(Float)


class TransferReasonRecord(Base):
    """How many events of one outcome gave one reason, within a series row."""

    __tablename__ = "transfer_reasons"

    series_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("transfer_series.id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    reason: Mapped[str] = mapped_column(String(512), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class MonitorEventRecord(Base):
    """An event the monitor has counted: a redelivered event finds its id here and changes nothing."""

    __tablename__ = "monitor_events"
    __table_args__ = (Index("monitor_events_seen_at", "seen_at"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


def _normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship; a plain postgresql:// URL would ask for psycopg2.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_database_engine(url: str) -> Engine:
    """An engine for the configured URL; SQLite gets WAL and a busy timeout for several processes."""
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, record):  # type: ignore[no-untyped-def]
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    if not url.startswith("postgresql"):
        scheme = url.split(":", 1)[0]
        raise ConfigError(f"database.url: only sqlite:/// and postgresql:// URLs are supported (got {scheme})")
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied to the database."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str) -> sessionmaker:  # type: ignore[type-arg]
    """Bring the schema up to date and return a session factory."""
    engine = create_database_engine(url)
    upgrade_schema(engine)
    return sessionmaker(engine, expire_on_commit=False)
