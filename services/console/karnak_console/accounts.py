"""The console's accounts: local users (argon2), OpenID Connect users, API tokens, signing keys.

Tokens read `kn_<id>_<secret>`: the id finds the row, the SHA-256 of the secret is compared in constant
time, so the database never holds a usable token. A token is shown once, when it is created.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import JSON, DateTime, Integer, String, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from karnak_console.roles import ROLES, Role
from karnak_shared.errors import KarnakError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_TOKEN = re.compile(r"^kn_([a-f0-9]{16})_([A-Za-z0-9_-]{43})$")
FIRST_ADMIN = "admin"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ConsoleBase(DeclarativeBase):
    pass


class UserRecord(ConsoleBase):
    __tablename__ = "console_users"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TokenRecord(ConsoleBase):
    __tablename__ = "console_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    created_by: Mapped[str] = mapped_column(String(256))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditRecord(ConsoleBase):
    __tablename__ = "console_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    actor: Mapped[str] = mapped_column(String(256))
    origin: Mapped[str] = mapped_column(String(16))
    client: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(512))
    revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    diff: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class KeyRecord(ConsoleBase):
    __tablename__ = "console_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AccountError(KarnakError):
    """A request about accounts that cannot be done (the message says why)."""


@dataclass(frozen=True)
class Principal:
    """Who makes a request: a user (password or OpenID Connect) or an API token."""

    name: str
    role: Role
    kind: str  # "user" | "token"

    @property
    def label(self) -> str:
        return self.name if self.kind == "user" else f"token:{self.name}"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    created_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: Role
    source: str
    created_at: dt.datetime
    last_login_at: dt.datetime | None


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name):
        raise AccountError(f"{what} must be 1 to 128 characters of letters, digits and . _ @ - (got {name!r})")
    return name


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise AccountError(f"role must be one of {', '.join(ROLES)} (got {role!r})")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccountStore:
    """Users, tokens and signing keys in the gateway's database (tables of migration 0003)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        # Memory-hard defaults of argon2-cffi (RFC 9106 low-memory profile).
        self._hasher = PasswordHasher()
        # Verifying against this when the user does not exist keeps the time of a failed login the same.
        self._decoy = self._hasher.hash(secrets.token_urlsafe(16))

    # --- users -----------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str) -> UserInfo:
        check_name(name, "user name")
        checked = check_role(role)
        if len(password) < 8:
            raise AccountError("the password must have at least 8 characters")
        record = UserRecord(name=name, role=checked, password_hash=self._hasher.hash(password), source="local")
        with self.sessions.begin() as session:
            if session.get(UserRecord, name) is not None:
                raise AccountError(f"a user named {name!r} already exists")
            session.add(record)
        return _user_info(record)

    def set_password(self, name: str, password: str) -> None:
        if len(password) < 8:
            raise AccountError("the password must have at least 8 characters")
        with self.sessions.begin() as session:
            record = session.get(UserRecord, name)
            if record is None:
                raise AccountError(f"no user named {name!r}")
            record.password_hash = self._hasher.hash(password)

    def remove_user(self, name: str) -> None:
        with self.sessions.begin() as session:
            record = session.get(UserRecord, name)
            if record is None:
                raise AccountError(f"no user named {name!r}")
            session.delete(record)

    def users(self) -> list[UserInfo]:
        with self.sessions() as session:
            return [_user_info(r) for r in session.scalars(select(UserRecord).order_by(UserRecord.name))]

    def user(self, name: str) -> UserInfo | None:
        with self.sessions() as session:
            record = session.get(UserRecord, name)
            return None if record is None else _user_info(record)

    def verify_password(self, name: str, password: str) -> Principal | None:
        """The user if the password is theirs; None otherwise (same work either way)."""
        with self.sessions.begin() as session:
            record = session.get(UserRecord, name)
            stored = record.password_hash if record is not None and record.password_hash else self._decoy
            try:
                self._hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
            if record is None or not record.password_hash:
                return None
            if self._hasher.check_needs_rehash(stored):
                record.password_hash = self._hasher.hash(password)
            record.last_login_at = _now()
            return Principal(record.name, check_role(record.role), "user")

    def oidc_login(self, subject: str, role: Role) -> Principal:
        """Record (or update) an account signed in by the OpenID provider, with the role it gave now."""
        name = subject[:128]
        with self.sessions.begin() as session:
            record = session.get(UserRecord, name)
            if record is None:
                record = UserRecord(name=name, role=role, password_hash=None, source="oidc")
                session.add(record)
            elif record.source != "oidc":
                raise AccountError(f"{name!r} is a local account: it signs in with its password")
            record.role = role
            record.last_login_at = _now()
        return Principal(name, role, "user")

    def ensure_first_admin(self) -> str | None:
        """With no account at all, create `admin` with a random password and return it (None otherwise)."""
        with self.sessions() as session:
            if session.scalars(select(UserRecord.name).limit(1)).first() is not None:
                return None
        password = secrets.token_urlsafe(18)
        try:
            with self.sessions.begin() as session:
                session.add(
                    UserRecord(
                        name=FIRST_ADMIN, role="admin", password_hash=self._hasher.hash(password), source="local"
                    )
                )
        except IntegrityError:
            return None  # another replica created it first
        return password

    # --- tokens ----------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, created_by: str) -> tuple[TokenInfo, str]:
        """A new token and its text, which is never stored and cannot be shown again."""
        check_name(name, "token name")
        checked = check_role(role)
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(
            id=token_id, name=name, role=checked, secret_hash=_digest(secret), created_by=created_by[:256]
        )
        with self.sessions.begin() as session:
            if session.scalars(select(TokenRecord).where(TokenRecord.name == name)).first() is not None:
                raise AccountError(f"a token named {name!r} already exists (revoke it or choose another name)")
            session.add(record)
        return _token_info(record), f"kn_{token_id}_{secret}"

    def tokens(self) -> list[TokenInfo]:
        with self.sessions() as session:
            return [_token_info(r) for r in session.scalars(select(TokenRecord).order_by(TokenRecord.name))]

    def revoke_token(self, name: str) -> TokenInfo:
        with self.sessions.begin() as session:
            record = session.scalars(select(TokenRecord).where(TokenRecord.name == name)).first()
            if record is None:
                raise AccountError(f"no token named {name!r}")
            if record.revoked_at is None:
                record.revoked_at = _now()
            return _token_info(record)

    def verify_token(self, text: str) -> Principal | None:
        match = _TOKEN.match(text.strip())
        if match is None:
            return None
        token_id, secret = match.groups()
        with self.sessions.begin() as session:
            record = session.get(TokenRecord, token_id)
            if record is None or record.revoked_at is not None:
                return None
            if not hmac.compare_digest(record.secret_hash, _digest(secret)):
                return None
            now = _now()
            last = record.last_used_at
            # One write a minute at most: a busy script should not turn every GET into a write.
            if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=dt.UTC))).total_seconds() > 60:
                record.last_used_at = now
            return Principal(record.name, check_role(record.role), "token")

    # --- keys ------------------------------------------------------------------------------------

    def signing_key(self, name: str) -> str:
        """A random key shared by every console replica through the database (created on first use)."""
        with self.sessions() as session:
            record = session.get(KeyRecord, name)
            if record is not None:
                return record.value
        try:
            with self.sessions.begin() as session:
                session.add(KeyRecord(name=name, value=secrets.token_urlsafe(48)))
        except IntegrityError:
            pass  # another replica created it first: use theirs
        with self.sessions() as session:
            stored = session.get(KeyRecord, name)
            assert stored is not None
            return stored.value


def _user_info(record: UserRecord) -> UserInfo:
    return UserInfo(record.name, check_role(record.role), record.source, record.created_at, record.last_login_at)


def _token_info(record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        record.id,
        record.name,
        check_role(record.role),
        record.created_at,
        record.created_by,
        record.last_used_at,
        record.revoked_at,
    )


def default_password_file() -> Path:
    return Path.home() / ".karnak" / "console-admin-password"


def write_owner_only(path: Path, text: str) -> None:
    """Write `text` to a file only its owner can read (created 0600, its folder 0700 when made here)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
