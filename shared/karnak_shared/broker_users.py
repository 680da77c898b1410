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

So only the processor, which applies the conditions and the de-identification, can put a message on a
send queue; a receiver's credentials reach the processor's input at most. No service may configure
anything nor use the default exchange (`amq.default`). The operator's user may do everything on the
prefix (replaying a parked message publishes to its origin exchange).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICE_USERS = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier", "monitor")
OPERATOR = "operator"

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


@dataclass(frozen=True)
class BrokerPermissions:
    """RabbitMQ's configure, write and read regular expressions for one user on the gateway's vhost."""

    configure: str
    write: str
    read: str


def _names(prefix: str, names: tuple[str, ...]) -> str:
    return f"^{re.escape(prefix)}\\.({'|'.join(dict.fromkeys(names))})$"


def permissions(user: str, prefix: str = "karnak") -> BrokerPermissions:
    """The permissions of a service's user (or the operator's) for the topology named by `prefix`."""
    everything = f"^{re.escape(prefix)}\\..*"
    if user == OPERATOR:
        # Replaying a parked message publishes to its origin exchange; listing reads the dead queue.
        return BrokerPermissions(everything, everything, everything)
    if user not in _PUBLISHES:
        raise ValueError(f"no broker user for {user!r}; known: {', '.join((*SERVICE_USERS, OPERATOR))}")
    consumes = _CONSUMES[user]
    return BrokerPermissions(
        configure="^$",
        write=_names(prefix, _PUBLISHES[user]),
        read=_names(prefix, consumes) if consumes else "^$",
    )


def username(user: str) -> str:
    """The RabbitMQ user name of a service (or of the operator): ``karnak-<service>``."""
    return f"karnak-{user}"
