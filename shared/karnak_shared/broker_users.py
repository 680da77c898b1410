"""One RabbitMQ user per service, allowed what that service does and nothing more (DESIGN 18).

RabbitMQ checks three regular expressions per user and virtual host (https://www.rabbitmq.com/docs/access-control):
*configure* to declare or delete a queue or an exchange, *write* to publish to an exchange and to bind a
queue, *read* to consume from a queue and to bind to an exchange. Every service still declares the whole
topology at start (its exchanges, queues and bindings, idempotently), so every one may configure every
name of the prefix, write every queue (to bind it) and read every exchange (to bind to it). What differs
is where each may publish and what it may consume:

| service       | publishes to (exchanges)       | consumes (queues)          |
| ------------- | ------------------------------ | -------------------------- |
| receiver      | ingest                         | -                          |
| processor     | send, events, retry, dead      | received                   |
| dicom-sender  | events, retry, dead            | send.dicom.*               |
| stow-sender   | events, retry, dead            | send.stow.*                |
| kheops-sharer | events, retry, dead            | kheops                     |
| notifier      | dead                           | notifier                   |

So only the processor, which applies the conditions and the de-identification, can put a message on a
send queue; a receiver's credentials reach the processor's input at most. The dead queue and the dead
exchange share a name, so writing the one (every service binds it) is writing the other. Queue names
carry a dot after their kind (`send.dicom.x`, `retry.5`) where the exchanges have none (`send`,
`retry`), which is what keeps "bind a send queue" apart from "publish to the send exchange". The
operator's commands (`karnak dead replay`, `config apply`) run with an operator user allowed everything
on the prefix. The default exchange (`amq.default`) is allowed to no service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICE_USERS = ("receiver", "processor", "dicom-sender", "stow-sender", "kheops-sharer", "notifier")
OPERATOR = "operator"

_PUBLISHES: dict[str, tuple[str, ...]] = {
    "receiver": ("ingest",),
    "processor": ("send", "events", "retry", "dead"),
    "dicom-sender": ("events", "retry", "dead"),
    "stow-sender": ("events", "retry", "dead"),
    "kheops-sharer": ("events", "retry", "dead"),
    "notifier": ("dead",),
}
_CONSUMES: dict[str, tuple[str, ...]] = {
    "receiver": (),
    "processor": ("received",),
    "dicom-sender": (r"send\.dicom\..+",),
    "stow-sender": (r"send\.stow\..+",),
    "kheops-sharer": ("kheops",),
    "notifier": ("notifier",),
}
# Every queue (bound by every service's declaration) and every exchange (bound to).
_QUEUES = ("received", r"send\..+", r"retry\..+", "dead", "notifier", "kheops")
_EXCHANGES = ("ingest", "send", "retry", "events", "dead")


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
    return BrokerPermissions(
        configure=everything,
        write=_names(prefix, (*_QUEUES, *_PUBLISHES[user])),
        read=_names(prefix, (*_EXCHANGES, *_CONSUMES[user])),
    )


def username(user: str) -> str:
    """The RabbitMQ user name of a service (or of the operator): ``karnak-<service>``."""
    return f"karnak-{user}"
