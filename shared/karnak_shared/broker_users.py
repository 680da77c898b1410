"""One RabbitMQ user per service, allowed what that service does and nothing more.

RabbitMQ checks three regular expressions per user and virtual host (https://www.rabbitmq.com/docs/access-control):
*configure* to declare or delete a queue or an exchange, *write* to publish to an exchange (and to bind a
queue, or to declare one dead-lettering to an exchange), *read* to consume from a queue (and to bind to an
exchange). Declaring the whole topology needs nearly everything (a delay queue dead-letters to the send
exchange, so whoever declares it may publish there), so with these users the topology is declared once by
the operator (`karnak broker setup`, or any operator command) and the services run with
`broker.declare_topology: false`: they only check, passively (which needs no permission), that it exists.
Each service user may then publish and consume exactly where its service does:

| service       | publishes to (exchanges)       | consumes (queues)          |
| ------------- | ------------------------------ | -------------------------- |
| receiver      | ingest                         | -                          |
| processor     | send, events, retry, dead      | received                   |
| dicom-sender  | events, retry, dead            | send.dicom.*               |
| stow-sender   | events, retry, dead            | send.stow.*                |
| kheops-sharer | events, retry, dead            | kheops                     |
| notifier      | dead                           | notifier                   |
| monitor       | retry, dead                    | monitor                    |

and, every one of them, its control traffic (`ControlConnection`): its status reports to `<prefix>.status`,
and a server-named exclusive queue (`amq.gen-...`) of its own bound to `<prefix>.config` (revision
notices) and `<prefix>.status` (status requests). Binding needs read on the exchange, so no service may
bind to a work exchange: a receiver's credentials cannot tap the send exchange through a queue of their
own. An exclusive queue is usable by its own connection only, so the `amq.gen-` rights reach no other.

So only the processor, which applies the conditions and the de-identification, can put a message on a
send queue; a receiver's credentials reach the processor's input at most. No service may configure
anything but its own exclusive queue, nor use the default exchange (`amq.default`). The operator's user,
and the console's (which replays parked messages, lists the dead queue and publishes revisions, declaring
the queues of new destinations), may do everything on the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from karnak_shared.errors import KarnakError

if TYPE_CHECKING:
    from karnak_shared.topology import Topology

SERVICE_USERS = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier", "monitor")
OPERATOR = "operator"
# Users with the operator's rights: the console does what the operator's commands do.
OPERATOR_USERS = (OPERATOR, "console")
# Every user `karnak broker setup --users` creates (and `karnak broker users` prints).
ALL_USERS = (*SERVICE_USERS, "console", OPERATOR)

_PUBLISHES: dict[str, tuple[str, ...]] = {
    "receiver": ("ingest",),
    "processor": ("send", "events", "retry", "dead"),
    "dicom-sender": ("events", "retry", "dead"),
    "stow-sender": ("events", "retry", "dead"),
    "kheops-sharer": ("events", "retry", "dead"),
    "notifier": ("dead",),
    # An event the database cannot take now waits in the delay queues; an unreadable one is parked.
    "monitor": ("retry", "dead"),
}
_CONSUMES: dict[str, tuple[str, ...]] = {
    "receiver": (),
    "processor": ("received",),
    "dicom-sender": (r"send\.dicom\..+",),
    "stow-sender": (r"send\.stow\..+",),
    "kheops-sharer": ("kheops",),
    "notifier": ("notifier",),
    "monitor": ("monitor",),
}
# The server-named exclusive queue of a service's control connection.
_OWN_QUEUE = r"^amq\.gen-[A-Za-z0-9_-]+$"


@dataclass(frozen=True)
class BrokerPermissions:
    """RabbitMQ's configure, write and read regular expressions for one user on the gateway's vhost."""

    configure: str
    write: str
    read: str


def _names(prefix: str, names: tuple[str, ...]) -> str:
    return f"^{re.escape(prefix)}\\.({'|'.join(dict.fromkeys(names))})$"


def _either(*patterns: str) -> str:
    return "|".join(f"(?:{p})" for p in patterns)


def permissions(user: str, prefix: str = "karnak") -> BrokerPermissions:
    """The permissions of a service's user (or the operator's) for the topology named by `prefix`."""
    if user in OPERATOR_USERS:
        # Replaying a parked message publishes to its origin exchange; listing reads the dead queue;
        # publishing a revision declares the queues of its new destinations; `karnak status` listens
        # through a queue of its own.
        everything = _either(f"^{re.escape(prefix)}\\..*", _OWN_QUEUE)
        return BrokerPermissions(everything, everything, everything)
    if user not in _PUBLISHES:
        raise ValueError(f"no broker user for {user!r}; known: {', '.join(ALL_USERS)}")
    return BrokerPermissions(
        configure=_OWN_QUEUE,
        write=_either(_names(prefix, (*_PUBLISHES[user], "status")), _OWN_QUEUE),
        read=_either(_names(prefix, (*_CONSUMES[user], "config", "status")), _OWN_QUEUE),
    )


def username(user: str) -> str:
    """The RabbitMQ user name of a service (or of the operator): ``karnak-<service>``."""
    return f"karnak-{user}"


class BrokerAccessRefused(KarnakError):
    """The configured broker user may not do what the service's start needs (or the topology is missing)."""


def check_service_access(url: str, topology: Topology) -> None:
    """Declare (or, with `declare_topology` false, check) `topology` once, and say plainly what stops it.

    Run when a service starts: a user without the right to declare, or a topology nobody declared, would
    otherwise only show as connections retried forever. An unreachable broker is left to the service's
    own reconnecting.
    """
    import pika
    import pika.exceptions

    from karnak_shared.broker import connection_parameters
    from karnak_shared.logs import redact_url

    try:
        # Not `open_connection`: an unreachable broker is the service's to report, once, in its own log.
        connection = pika.BlockingConnection(connection_parameters(url, name="karnak-access-check"))
    except Exception:  # noqa: BLE001 - unreachable or refused at login: the service's retries say it
        return
    try:
        topology.declare(connection.channel())
    except pika.exceptions.ChannelClosedByBroker as exc:
        where = redact_url(url)
        if exc.reply_code == 403 and topology.declare_topology:
            raise BrokerAccessRefused(
                f"the broker user of {where} may not declare the topology ({exc.reply_text}): with per-service "
                "users set broker.declare_topology: false and declare it once with `karnak broker setup` "
                "(the operator's credentials)"
            ) from None
        if exc.reply_code == 404 and not topology.declare_topology:
            raise BrokerAccessRefused(
                f"the topology is not declared at {where} ({exc.reply_text}): run `karnak broker setup` with the "
                "operator's credentials first (broker.declare_topology is false: services only check it)"
            ) from None
        raise BrokerAccessRefused(f"the broker at {where} refused the topology: {exc.reply_text}") from None
    except pika.exceptions.AMQPError:
        return  # the connection dropped: the service's own reconnecting takes over
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001
            pass
