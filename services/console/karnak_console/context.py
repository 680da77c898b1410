"""The console's parts, built once at start-up and shared by every request (the app is stateless otherwise)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import sessionmaker

from karnak_console.accounts import AccountStore
from karnak_console.announcer import RevisionAnnouncer
from karnak_console.audit import AuditLog
from karnak_console.editor import RoutingEditor
from karnak_console.problems import ApiProblem
from karnak_console.security import Authenticator, LoginThrottle
from karnak_console.statusboard import BROKER_ERRORS, StatusBoard
from karnak_shared.broker import open_connection
from karnak_shared.config import GatewayConfig, ServiceSettings
from karnak_shared.revisions import Revision, RevisionStore
from karnak_shared.topology import Topology


@dataclass
class Console:
    store: RevisionStore
    accounts: AccountStore
    audit: AuditLog
    editor: RoutingEditor
    authenticator: Authenticator
    throttle: LoginThrottle
    status: StatusBoard | None = None
    session_key: str = field(default="", repr=False)

    @classmethod
    def build(cls, store: RevisionStore, *, status: bool = True, announce: bool = True) -> Console:
        """The console's parts; without `status`/`announce` it neither listens to nor tells the services."""
        settings = store.settings
        from karnak_shared.database import create_database_engine

        accounts = AccountStore(create_database_engine(settings.database.url.get_secret_value()))
        audit = AuditLog(accounts.sessions)
        editor = RoutingEditor(store, audit, RevisionAnnouncer(store.notify) if announce else _silent)
        board = None
        if status:
            board = StatusBoard(
                settings.broker.url.get_secret_value(), settings.broker.prefix, settings.broker.heartbeat
            )
        return cls(
            store=store,
            accounts=accounts,
            audit=audit,
            editor=editor,
            authenticator=Authenticator(accounts),
            throttle=LoginThrottle(settings.console.login_attempts_per_minute),
            status=board,
            session_key=accounts.signing_key("session"),
        )

    @property
    def settings(self) -> ServiceSettings:
        return self.store.settings

    @property
    def pseudonyms(self) -> sessionmaker:  # type: ignore[type-arg]
        return self.accounts.sessions

    def gateway_config(self, revision: Revision | None = None) -> GatewayConfig:
        """What the services run now (settings and the latest revision); 409 before the first revision."""
        revision = revision or self.store.latest()
        if revision is None:
            raise ApiProblem(409, "the gateway has no routing configuration yet: create a forward node first")
        return self.store.gateway_config(revision)

    def queued(self, queues: list[str]) -> dict[str, int]:
        """How many messages wait in each queue; 503 when RabbitMQ cannot say."""
        from karnak_shared.deadletters import DeadLetterQueue

        try:
            connection = open_connection(self.settings.broker.url.get_secret_value(), name="karnak-console")
        except BROKER_ERRORS as exc:
            raise ApiProblem(503, f"cannot count the queued messages: {exc!r}; force=true deletes anyway") from None
        broker = self.settings.broker
        topology = Topology(broker.prefix, tuple(broker.retry_delays), broker.delivery_limit, ())
        dead = DeadLetterQueue(connection, topology)
        try:
            return {queue: dead.queued(queue) for queue in queues}
        except BROKER_ERRORS as exc:
            raise ApiProblem(503, f"cannot count the queued messages: {exc!r}; force=true deletes anyway") from None
        finally:
            dead.close()


def _silent(revision: Revision) -> None:
    """No announcement: the services find the revision by their own 30 s check."""
