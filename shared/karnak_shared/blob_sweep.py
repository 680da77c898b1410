"""`karnak blobs sweep`: find the blobs no message refers to (left by a crash) and remove them, in two steps.

A blob is left behind when a service dies between writing it and RabbitMQ confirming the message that
names it, or between acking a message and deleting its blob. Nothing in the store says which blobs are
such strays, so the sweep asks the queues: a blob is removed only when

1. it is older than `older_than` (a younger one may belong to a message being published right now), and
2. no message in any of the gateway's queues names it (the received queue, every send queue, those of
   removed destinations included, the delay queues and the dead-letter queue). The queues are read the
   way `karnak dead list` reads the dead-letter queue: every message is taken without an ack and all are
   handed back at once when the channel closes, so nothing is removed, and while the sweep holds them no
   message can move from one queue to another behind its back.

A message a service is handling at that moment is in no queue, and its blob may be old (a retried or
replayed message keeps its blob). So a blob that passes 1 and 2 is not deleted but *set aside*: moved
out of the store's view, from where reading it (any message that still names it) brings it back. Only a
blob that has stayed set aside for `older_than` and that the queues still do not name is purged. A
message being handled never loses its blob: it brings it back by reading it, or it is done with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pika.exceptions

from karnak_shared import header_names
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import open_connection
from karnak_shared.errors import BrokerUnavailable

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds of `30s`, `10m`, `1h`, `7d` or a plain number of seconds; `ValueError` saying the forms."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: give seconds or a number with s, m, h or d (e.g. 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


@dataclass
class SweepReport:
    """What a sweep found and did (or, for a dry run, would do)."""

    examined: int = 0
    referenced: int = 0
    too_young: int = 0
    set_aside: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    kept_aside: int = 0
    dry_run: bool = False

    def summary(self) -> str:
        would = "would be " if self.dry_run else ""
        return (
            f"{self.examined} blob(s) examined: {self.referenced} named by a queued message, "
            f"{self.too_young} too young to judge, {len(self.set_aside)} {would}set aside; "
            f"{len(self.purged)} set-aside blob(s) {would}purged, {self.kept_aside} kept aside for now"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "referenced": self.referenced,
            "too_young": self.too_young,
            "set_aside": self.set_aside,
            "purged": self.purged,
            "kept_aside": self.kept_aside,
            "dry_run": self.dry_run,
        }


def sweep(
    store: BlobStore,
    queued_references: Callable[[], set[str]],
    older_than: float,
    *,
    dry_run: bool = False,
    now: Callable[[], float] = time.time,
) -> SweepReport:
    """Set aside the old blobs no queued message names, and purge those set aside long enough (module doc)."""
    report = SweepReport(dry_run=dry_run)
    # The store is listed before the queues are read: a message published in between is in a queue.
    started = now()
    candidates = []
    for blob in store.blobs():
        report.examined += 1
        if started - blob.modified < older_than:
            report.too_young += 1
        else:
            candidates.append(blob.reference)
    queued = queued_references()
    for reference in candidates:
        if reference in queued:
            report.referenced += 1
            continue
        report.set_aside.append(reference)
        if not dry_run:
            store.set_aside(reference)
    # Set aside by this run: not judged by its time (an S3 server's clock may differ from ours), kept.
    just_set_aside = set(report.set_aside) if older_than > 0 else set()
    for blob in store.set_aside_blobs():
        if blob.reference in just_set_aside or now() - blob.modified < older_than or blob.reference in queued:
            report.kept_aside += 1
            continue
        report.purged.append(blob.reference)
        if not dry_run:
            store.purge(blob.reference)
    return report


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def queued_blob_references(amqp_url: str, queues: Iterable[str]) -> set[str]:
    """The blob references of every message in `queues`, read without removing any (module docstring)."""
    queues = list(queues)
    connection = open_connection(amqp_url, name="karnak-blobs-sweep")
    references: set[str] = set()
    queue = ""
    try:
        channel = connection.channel()
        for queue in queues:
            try:
                while True:
                    method, properties, _ = channel.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    blob = (properties.headers or {}).get(header_names.BLOB)
                    if blob:
                        references.add(_text(blob))
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    reason = exc.reply_text
                    raise BrokerUnavailable(f"RabbitMQ refused to let the sweep read {queue}: {reason}") from None
                # A queue deleted since it was listed: its channel closed, handing back what it held. All
                # are read again without it, so that every message is held at the same time once more.
                raise _Restart from None
        channel.close()  # hands every message back, unacked
    except _Restart:
        connection.close()
        return queued_blob_references(amqp_url, [q for q in queues if q != queue])
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"lost RabbitMQ while reading the queues: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()
    return references


class _Restart(Exception):
    """A queue vanished while the sweep read it: read them all again without it."""
