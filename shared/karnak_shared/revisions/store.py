"""The revision store: immutable, numbered revisions of the routing configuration in SQL (DESIGN.md section 14).

`RevisionStore` is what the services, the console and `karnak config` build on:

- `apply` validates a routing document as a whole (the errors of `karnak config check`, by field path),
  encrypts its literal secrets and stores it as the next revision, unless another revision was stored
  since the one it is based on: then `RevisionConflict` names that revision and nothing is stored.
- `check` is what a service calls at start-up and every 30 s: in database mode it bootstraps an empty
  database from the file's routing keys (revision 1, origin `bootstrap`); in file mode it reads the file
  again (a ConfigMap swapped through its `..data` symlink included) and stores its routing part as a new
  revision (origin `file`) when it changed. It returns the latest revision.
- `gateway_config` turns a revision into the `GatewayConfig` a service runs: the file's settings with the
  revision's routing, references resolved and secrets decrypted.
- `notify` tells every running service about a revision on the `<prefix>.config` fanout exchange.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import Table, func, insert, select
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from karnak_shared.broker import ConfirmingPublisher
from karnak_shared.config import (
    ROUTING_KEYS,
    ConfigFile,
    FieldPath,
    GatewayConfig,
    RoutingConfig,
    ServiceSettings,
    read_config_file,
    read_yaml_file,
    validate_document,
)
from karnak_shared.database import REVISION_ORIGINS, ConfigRevisionRecord, create_database_engine, upgrade_schema
from karnak_shared.errors import ConfigError, KarnakError
from karnak_shared.logs import EventLogger
from karnak_shared.revisions.document import (
    Change,
    Document,
    canonical_json,
    checksum,
    diff_documents,
    embed_profiles,
    routing_part,
    to_yaml,
)
from karnak_shared.revisions.secrets import SecretCipher, encode_secrets

log = EventLogger("karnak.revisions")

Origin = Literal["console", "api", "apply", "bootstrap", "rollback", "file"]
assert get_args(Origin) == REVISION_ORIGINS

_TABLE: Table = ConfigRevisionRecord.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Revision:
    """One stored revision. Its document holds secrets only as references or encrypted."""

    number: int
    created_at: dt.datetime
    author: str
    origin: str
    comment: str
    document: Document = field(repr=False)
    checksum: str

    def describe(self) -> str:
        """``revision 3 (apply by alice, 2026-12-03 18:20:01 UTC)``."""
        when = self.created_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"revision {self.number} ({self.origin} by {self.author}, {when})"


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` (or `rollback`) did."""

    # The new revision's number; the unchanged current one when nothing changed; on a dry run, the
    # number the revision would get.
    number: int
    # The revision the change was compared with and based on (0: the database held none).
    based_on: int
    changes: list[Change]
    stored: bool
    dry_run: bool
    revision: Revision | None = None
    checksum: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class RevisionConflict(KarnakError):
    """Another revision was stored after the one a change was based on: nothing was stored."""

    def __init__(self, based_on: int, winner: Revision) -> None:
        self.based_on = based_on
        self.winner = winner
        super().__init__(
            f"{winner.describe()} was stored while this change was based on revision {based_on}: nothing was "
            f"stored; look at `karnak config diff {based_on} {winner.number}` and apply again"
        )


class RevisionNotFound(KarnakError):
    """No revision has that number; the message names the known range."""

    def __init__(self, number: int, known: tuple[int, int] | None) -> None:
        self.number = number
        self.known = known
        where = "the database holds no revision yet" if known is None else f"known revisions: {known[0]} to {known[1]}"
        super().__init__(f"no revision {number}: {where}")


class RevisionStoreUnavailable(KarnakError):
    """The database of the revisions cannot be reached (or is locked): the latest revision stays in use."""


class RoutingReadOnly(KarnakError):
    """configuration.source is file: the routing configuration changes only by editing the file."""


class RevisionNotice(BaseModel):
    """The message on the `<prefix>.config` fanout exchange: a revision is stored, go and apply it."""

    revision: int
    checksum: str


def default_author() -> str:
    """`user@host` of this process, for revisions stored by a command."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


class RevisionStore:
    """The revisions of one gateway's routing configuration, with the settings of its configuration file."""

    def __init__(self, engine: Engine, config_file: ConfigFile) -> None:
        self._engine = engine
        self._file = config_file
        self._cipher = SecretCipher.from_settings(config_file.settings.secrets)
        self._warned_ignored_routing = False
        self._lock = threading.Lock()

    @classmethod
    def open(cls, config_file: ConfigFile | str | os.PathLike[str] | None = None) -> RevisionStore:
        """The store of a configuration file (default: $KARNAK_CONFIG), its database brought to the latest schema."""
        if not isinstance(config_file, ConfigFile):
            config_file = read_config_file(config_file)
        url = config_file.settings.database.url.get_secret_value()
        engine = create_database_engine(url)
        try:
            upgrade_schema(engine)
        except (OperationalError, InterfaceError) as exc:
            engine.dispose()
            raise _unavailable(url, exc) from None
        return cls(engine, config_file)

    def close(self) -> None:
        self._engine.dispose()

    @property
    def settings(self) -> ServiceSettings:
        return self._file.settings

    @property
    def config_file(self) -> ConfigFile:
        return self._file

    @property
    def source(self) -> Literal["database", "file"]:
        return self._file.settings.configuration.source

    # --- reading ---------------------------------------------------------------------------------

    def latest(self) -> Revision | None:
        """The current revision, or None when the database holds none."""
        with self._connect() as connection:
            row = connection.execute(select(_TABLE).order_by(_TABLE.c.number.desc()).limit(1)).mappings().first()
        return None if row is None else _revision(row)

    def head(self) -> RevisionNotice | None:
        """The latest revision's number and checksum only (a cheap query for a periodic check)."""
        query = select(_TABLE.c.number, _TABLE.c.checksum).order_by(_TABLE.c.number.desc()).limit(1)
        with self._connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else RevisionNotice(revision=int(row[0]), checksum=str(row[1]))

    def get(self, number: int) -> Revision:
        """Revision `number`; `RevisionNotFound` naming the known range when there is none."""
        with self._connect() as connection:
            row = connection.execute(select(_TABLE).where(_TABLE.c.number == number)).mappings().first()
            if row is None:
                raise RevisionNotFound(number, self._known_range(connection))
        return _revision(row)

    def history(self, limit: int | None = None) -> list[Revision]:
        """The revisions, newest first."""
        query = select(_TABLE).order_by(_TABLE.c.number.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as connection:
            return [_revision(row) for row in connection.execute(query).mappings()]

    def diff(self, a: int, b: int) -> list[Change]:
        """What changed from revision `a` to revision `b`."""
        return diff_documents(self.get(a).document, self.get(b).document)

    def export(self, revision: Revision) -> str:
        """The revision as YAML for `karnak config apply`: secrets as references or encrypted, never in clear."""
        header = f"{revision.describe()}\nchecksum {revision.checksum}"
        if revision.comment:
            header += f"\n{revision.comment}"
        return to_yaml(revision.document, header=header)

    # --- validating and building -----------------------------------------------------------------

    def validate(self, document: Document, lines: dict[FieldPath, int] | None = None) -> RoutingConfig:
        """The document validated as a whole, references resolved and secrets decrypted; `ConfigError`
        naming every problem by its field path (and line, given the file's `lines`) otherwise."""
        if not isinstance(document, dict):
            raise ConfigError("(top level): the routing configuration must be a mapping")
        decrypt = self._cipher.decrypt_body if self._cipher is not None else None
        return validate_document(RoutingConfig, document, lines, decrypt)

    def gateway_config(self, revision: Revision) -> GatewayConfig:
        """What a service runs: the file's service settings with the revision's routing configuration."""
        try:
            return GatewayConfig.combine(self.settings, self.validate(revision.document))
        except ConfigError as exc:
            raise ConfigError([f"revision {revision.number}: {problem}" for problem in exc.problems]) from None

    def read_document(self, path: str | os.PathLike[str]) -> Document:
        """The routing document of a YAML file (profiles read into it), validated with the file's lines.

        The file may be a whole configuration file: its service settings are not part of a revision and
        are left out (`ignored_settings` says which).
        """
        file = read_routing_file(path)
        document = embed_profiles(file.routing, file.base_dir, file.lines)
        self.validate(document, file.lines)
        return document

    # --- writing ---------------------------------------------------------------------------------

    def apply(
        self,
        document: Document,
        *,
        author: str,
        origin: Origin,
        comment: str = "",
        based_on: int | None = None,
        dry_run: bool = False,
    ) -> ApplyResult:
        """Validate `document` and store it as the next revision; see the module's docstring.

        `based_on` is the revision the change was made on (default: the latest now; 0: an empty database).
        Raises `ConfigError` (nothing stored) for an invalid document, `RevisionConflict` when another
        revision came after `based_on`, `RoutingReadOnly` in file mode for any origin but `file`.
        """
        if origin not in REVISION_ORIGINS:
            raise ValueError(f"unknown revision origin {origin!r}")
        if self.source == "file" and origin != "file":
            raise RoutingReadOnly(
                f"configuration.source is file: the routing configuration is {self._file.path} itself; "
                "change that file (each change becomes a revision by itself)"
            )
        base = self._base(based_on)
        base_number = base.number if base is not None else 0
        routing = self.validate(document)
        _require_profile_texts(routing)
        stored = encode_secrets(document, routing, self._cipher, base.document if base is not None else None)
        canonical_json(stored)
        digest = checksum(stored)
        changes = diff_documents(base.document if base is not None else None, stored)
        if base is not None and digest == base.checksum:
            return ApplyResult(base_number, base_number, [], stored=False, dry_run=dry_run, checksum=digest)
        if dry_run:
            return ApplyResult(base_number + 1, base_number, changes, stored=False, dry_run=True, checksum=digest)
        revision = self._insert(base_number, stored, digest, author=author, origin=origin, comment=comment)
        log.info(
            "config.revision-stored",
            revision=revision.number,
            origin=origin,
            author=author,
            changes=len(changes),
            checksum=digest,
        )
        return ApplyResult(
            revision.number, base_number, changes, stored=True, dry_run=False, revision=revision, checksum=digest
        )

    def rollback(
        self,
        number: int,
        *,
        author: str,
        comment: str = "",
        based_on: int | None = None,
        dry_run: bool = False,
    ) -> ApplyResult:
        """Store a new revision equal to revision `number` (origin `rollback`)."""
        target = self.get(number)
        return self.apply(
            target.document,
            author=author,
            origin="rollback",
            comment=comment or f"rollback to revision {number}",
            based_on=based_on,
            dry_run=dry_run,
        )

    def check(self) -> Revision:
        """The latest revision, after bootstrapping (database mode) or taking the file's change (file mode).

        Raises `ConfigError` when there is no routing configuration anywhere, or the file's is invalid
        (the latest revision then stays what services run).
        """
        with self._lock:
            if self.source == "file":
                return self._take_file()
            latest = self.latest()
            if latest is None:
                return self._bootstrap()
            if self._file.routing and not self._warned_ignored_routing:
                self._warned_ignored_routing = True
                log.warning(
                    "config.file-routing-ignored",
                    file=str(self._file.path),
                    keys=",".join(self._file.routing),
                    revision=latest.number,
                    hint="the routing configuration lives in the database (configuration.source: database); "
                    "change it with `karnak config apply FILE`",
                )
            return latest

    def _bootstrap(self) -> Revision:
        if not self._file.routing:
            raise ConfigError(
                f"{self._file.path}: the database holds no configuration revision and the file has no "
                "forward_nodes: store one with `karnak config apply FILE`"
            )
        document = embed_profiles(self._file.routing, self._file.base_dir, self._file.lines)
        self.validate(document, self._file.lines)
        # Bootstrapped from this file: its routing keys are not "ignored" in this process.
        self._warned_ignored_routing = True
        try:
            result = self.apply(
                document, author=f"file {self._file.path}", origin="bootstrap", comment="first revision", based_on=0
            )
        except RevisionConflict:  # another service instance bootstrapped at the same time
            return self._latest_or_fail()
        assert result.revision is not None
        return result.revision

    def _take_file(self) -> Revision:
        file = read_config_file(self._file.path)
        if not file.routing:
            raise ConfigError(
                f"{file.path}: configuration.source is file but the file has no forward_nodes (the routing "
                "configuration)"
            )
        document = embed_profiles(file.routing, file.base_dir, file.lines)
        self.validate(document, file.lines)
        for attempt in range(3):
            try:
                self.apply(
                    document, author=f"file {file.path}", origin="file", comment="the configuration file changed"
                )
                break
            except RevisionConflict:
                # Several instances read the same new file: one stored it, the others find no change.
                if attempt == 2:
                    raise
        return self._latest_or_fail()

    def _latest_or_fail(self) -> Revision:
        latest = self.latest()
        if latest is None:
            raise ConfigError("the database holds no configuration revision")
        return latest

    def _base(self, based_on: int | None) -> Revision | None:
        latest = self.latest()
        if based_on is None or (latest is not None and based_on == latest.number):
            return latest
        if latest is None:
            if based_on == 0:
                return None
            raise RevisionNotFound(based_on, None)
        if based_on > latest.number or based_on < 0:
            with self._connect() as connection:
                raise RevisionNotFound(based_on, self._known_range(connection))
        # Based on an older revision: another came after it.
        raise RevisionConflict(based_on, self.get(based_on + 1))

    def _insert(
        self, based_on: int, document: Document, digest: str, *, author: str, origin: str, comment: str
    ) -> Revision:
        number = based_on + 1
        values: dict[str, Any] = {
            "number": number,
            "created_at": dt.datetime.now(dt.UTC),
            "author": author[:256],
            "origin": origin,
            "comment": comment,
            "document": document,
            "checksum": digest,
        }
        try:
            with self._write_transaction() as connection:
                current = connection.execute(select(func.max(_TABLE.c.number))).scalar() or 0
                if current != based_on:
                    raise _Raced()
                connection.execute(insert(_TABLE).values(**values))
        except (_Raced, IntegrityError):
            # The unique number: whoever inserted it first won; name that revision.
            raise RevisionConflict(based_on, self.get(number)) from None
        return _revision(values)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection; a database that cannot be reached is `RevisionStoreUnavailable` (no password in it)."""
        try:
            with self._engine.connect() as connection:
                yield connection
        except (OperationalError, InterfaceError) as exc:
            raise _unavailable(self.settings.database.url.get_secret_value(), exc) from None

    @contextmanager
    def _write_transaction(self) -> Iterator[Connection]:
        """One transaction for the check of the latest number and the insert.

        SQLite takes its write lock at BEGIN IMMEDIATE, so a second writer waits and then sees the first
        one's revision; PostgreSQL lets both read, and the primary key refuses the second insert.
        """
        with self._connect() as connection:
            if self._engine.dialect.name != "sqlite":
                with connection.begin():
                    yield connection
                return
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")

    def _known_range(self, connection: Connection) -> tuple[int, int] | None:
        low, high = connection.execute(select(func.min(_TABLE.c.number), func.max(_TABLE.c.number))).one()
        return None if low is None else (int(low), int(high))

    # --- telling the services --------------------------------------------------------------------

    def notify(self, revision: Revision, publisher: ConfirmingPublisher | None = None) -> None:
        """Publish `{"revision": N, "checksum": ...}` to `<prefix>.config` (confirmed; `BrokerUnavailable` otherwise).

        Without a `publisher` one is opened for this message; it declares the revision's topology, so the
        queues of new destinations exist before any service routes to them.
        """
        from karnak_shared.topology import Topology

        body = RevisionNotice(revision=revision.number, checksum=revision.checksum).model_dump_json().encode()
        config = self.gateway_config(revision)
        # Declared whatever broker.declare_topology says: that setting is the services' (whose users may
        # not declare); who publishes a revision is an operator (the console, `karnak config apply`).
        topology = dataclasses.replace(Topology.from_config(config), declare_topology=True)
        if publisher is not None:
            publisher.publish(topology.config_exchange, "", body, {}, mandatory=False)
            return
        from karnak_shared.broker import Publisher

        own = Publisher(
            config.broker.url.get_secret_value(),
            topology,
            heartbeat=config.broker.heartbeat,
            confirm_timeout=config.broker.confirm_timeout,
            name="karnak-config",
        ).start()
        try:
            own.publish(topology.config_exchange, "", body, {}, mandatory=False)
        finally:
            own.stop()


def _require_profile_texts(routing: RoutingConfig) -> None:
    """A revision is self-contained: every service runs the same profiles, whatever its file system holds."""
    from karnak_shared.config import is_profile_text

    problems = [
        f"projects[{index}].profile: a revision carries the profile's YAML text, not a file's path "
        "(`karnak config apply FILE` reads the profile files it names)"
        for index, project in enumerate(routing.projects)
        if not is_profile_text(project.profile)
    ]
    if problems:
        raise ConfigError(problems)


def _unavailable(url: str, exc: Exception) -> RevisionStoreUnavailable:
    from karnak_shared.logs import redact_url

    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return RevisionStoreUnavailable(
        f"the configuration revisions' database at {redact_url(url)} is unavailable: {redact_url(reason)}"
    )


class _Raced(Exception):
    """Inside the write transaction: the latest number is no longer the one the change was based on."""


def _revision(row: RowMapping | dict[str, Any]) -> Revision:
    created = row["created_at"]
    if created.tzinfo is None:  # SQLite keeps no time zone: every timestamp is written in UTC
        created = created.replace(tzinfo=dt.UTC)
    return Revision(
        number=int(row["number"]),
        created_at=created,
        author=row["author"],
        origin=row["origin"],
        comment=row["comment"] or "",
        document=row["document"],
        checksum=row["checksum"],
    )


@dataclass(frozen=True)
class RoutingFile:
    """A YAML file given to `karnak config apply`: its routing part and the settings it also holds."""

    path: Path
    routing: Document
    ignored_settings: list[str]
    lines: dict[FieldPath, int]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def read_routing_file(path: str | os.PathLike[str]) -> RoutingFile:
    """The routing part of a YAML file as written (profiles still paths), and the setting keys it holds."""
    data, lines = read_yaml_file(path)
    absolute = Path(os.path.abspath(path))
    return RoutingFile(absolute, routing_part(data), [k for k in data if k not in ROUTING_KEYS], lines)
