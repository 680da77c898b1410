"""The audit trail: every change, who made it, when, from where, on what, and what changed (secrets masked)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from karnak_console.accounts import AuditRecord
from karnak_console.masking import mask_secrets

Origin = Literal["api", "console", "cli"]


class AuditEntry(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    origin: Origin
    client: str
    action: str
    object: str
    revision: int | None
    diff: list[dict[str, Any]]


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    origin: str | None = None
    object: str | None = None  # prefix: `forward-nodes/GW` matches its destinations too
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 100


class AuditLog:
    def __init__(self, sessions: sessionmaker) -> None:  # type: ignore[type-arg]
        self._sessions = sessions

    def record(
        self,
        *,
        actor: str,
        origin: Origin,
        client: str,
        action: str,
        object: str,  # noqa: A002 - the audit's own word
        revision: int | None = None,
        diff: list[dict[str, Any]] | None = None,
    ) -> AuditEntry:
        record = AuditRecord(
            actor=actor[:256],
            origin=origin,
            client=client[:128],
            action=action[:64],
            object=object[:512],
            revision=revision,
            diff=mask_secrets(diff or []),
        )
        with self._sessions.begin() as session:
            session.add(record)
            session.flush()
            return _entry(record)

    def entries(self, wanted: AuditFilter) -> list[AuditEntry]:
        query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(wanted.limit)
        if wanted.actor:
            query = query.where(AuditRecord.actor == wanted.actor)
        if wanted.origin:
            query = query.where(AuditRecord.origin == wanted.origin)
        if wanted.action:
            query = query.where(AuditRecord.action == wanted.action)
        if wanted.object:
            query = query.where(AuditRecord.object.startswith(wanted.object, autoescape=True))
        if wanted.since:
            query = query.where(AuditRecord.at >= wanted.since)
        if wanted.until:
            query = query.where(AuditRecord.at <= wanted.until)
        with self._sessions() as session:
            return [_entry(r) for r in session.scalars(query)]


def _entry(record: AuditRecord) -> AuditEntry:
    origin: Origin = "cli" if record.origin == "cli" else ("console" if record.origin == "console" else "api")
    return AuditEntry(
        id=record.id,
        at=record.at if record.at.tzinfo else record.at.replace(tzinfo=dt.UTC),
        actor=record.actor,
        origin=origin,
        client=record.client,
        action=record.action,
        object=record.object,
        revision=record.revision,
        diff=list(record.diff),
    )
