"""Turning transfer events into emails: windows per destination, one email per study, settle after sending.

Every event stays unsettled until the email that counts it was accepted by the SMTP server; then its
token is settled (for the service, the broker delivery is acked). An SMTP failure keeps the email and
its events and tries again with back-off; only when the events have been held for nearly RabbitMQ's
consumer timeout are they handed back to the queue, to come again as a new window. Nothing here speaks
AMQP: the service hands in each event with a token and is called back to settle it. A `retried` event
is settled at once: the instance's final outcome (sent, failed, duplicate) is what an email counts.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge

from karnak_notifier.message import compose
from karnak_notifier.smtp import SmtpUnavailable
from karnak_notifier.summary import StudySummary, split_by_study, summarize_study
from karnak_notifier.window import Held, Windows
from karnak_shared.config import Notifications
from karnak_shared.envelope import TransferEvent
from karnak_shared.errors import DeliveryError
from karnak_shared.logs import EventLogger

log = EventLogger("karnak.notifier")

T = TypeVar("T")

NOTIFICATIONS = Counter(
    "karnak_notifications_sent_total",
    "Notification emails per destination: sent (accepted by the SMTP server), retried (SMTP failure) or "
    "requeued (still failing after 27 minutes: its events went back to the queue)",
    ["destination", "outcome"],
)
EVENTS = Counter(
    "karnak_notification_events_total",
    "Transfer events taken into notification windows, per destination and kind",
    ["destination", "kind"],
)
WINDOWS_OPEN = Gauge(
    "karnak_notification_windows_open", "1 while a destination's notification window is open", ["destination"]
)
EVENTS_HELD = Gauge(
    "karnak_notification_events_held",
    "Events held unacked in windows and in emails not yet accepted by the SMTP server",
    ["destination"],
)
EMAILS_PENDING = Gauge(
    "karnak_notification_emails_pending",
    "Emails of closed windows waiting for the SMTP server (a retry after a failure)",
    ["destination"],
)

# SMTP back-off is capped so a recovered server is used within minutes.
MAX_RETRY_DELAY = 600.0
# RabbitMQ closes a channel holding a delivery unacked for 30 minutes (consumer_timeout), which would cut
# off every other window too: an email still failing after this long hands its events back to the queue,
# where they come again as a new window (each return counts against the queue's x-delivery-limit).
MAX_HOLD_SECONDS = 1620.0


class Disposition(enum.Enum):
    """How a token is settled."""

    DONE = "done"  # counted in an email the SMTP server accepted, or not to be emailed at all
    RETURN = "return"  # its email could not go for too long: back to the queue, to come again
    POISON = "poison"  # an event this code cannot take: parked, not dropped


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> int: ...


@dataclass
class PendingEmail(Generic[T]):
    """The email of one study of a closed window, with the events it settles once sent."""

    summary: StudySummary
    held: tuple[Held[T], ...]
    due: float
    held_since: float  # when its window opened: its events have been unacked since about then
    attempts: int = 0

    @property
    def destination(self) -> str:
        return self.summary.destination

    def event_ids(self) -> list[str]:
        return [f"{h.event.kind}:{h.event.instance_id}:{h.event.destination}" for h in self.held]


@dataclass(frozen=True)
class _Arrival(Generic[T]):
    event: TransferEvent
    token: T


class _ConnectionLost:
    pass


class _Attempt(enum.Enum):
    SENT = "sent"
    REFUSED = "refused"  # this email failed; others may go
    UNREACHABLE = "unreachable"  # no email can go for now


class Notifier(Generic[T]):
    """Aggregates events into windows and emails each window's studies; runs in a thread of its own."""

    def __init__(
        self,
        destinations: Mapping[str, Notifications],
        mailer: Mailer,
        sender: str,
        settle: Callable[[T, Disposition], None],
        retry_delays: Sequence[float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._destinations = dict(destinations)
        self._mailer = mailer
        self._sender = sender
        self._settle = settle
        self._retry_delays = tuple(min(float(d), MAX_RETRY_DELAY) for d in retry_delays) or (5.0,)
        self._clock = clock
        self._windows: Windows[T] = Windows({d: float(n.interval) for d, n in destinations.items()})
        self._pending: list[PendingEmail[T]] = []
        self._inbox: queue.Queue[_Arrival[T] | _ConnectionLost] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="karnak-notifier", daemon=True)
        for destination in self._destinations:
            self._update_gauges(destination)

    # --- from any thread ---------------------------------------------------------------------------

    def offer(self, event: TransferEvent, token: T) -> None:
        """Hand in an event and the token that settles it (returns at once)."""
        self._inbox.put(_Arrival(event, token))

    def connection_lost(self) -> None:
        """The tokens handed in so far can no longer be settled: their events will be delivered again."""
        self._inbox.put(_ConnectionLost())

    def start(self) -> Notifier[T]:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the email being sent, if any; open windows are left unsent (their events come back)."""
        self._stop.set()
        self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the notifier's own thread (or a test) -----------------------------------------------------

    def receive(self, event: TransferEvent, token: T, now: float) -> None:
        """Take one event: into its destination's window, or settled at once when it is not emailed."""
        if event.kind == "retried" or not self._windows.accepts(event.destination):
            self._settle(token, Disposition.DONE)
            return
        EVENTS.labels(event.destination, event.kind).inc()
        if self._windows.add(event, token, now):
            log.info(
                "window.opened", destination=event.destination, interval=self._destinations[event.destination].interval
            )

    def flush(self, now: float) -> None:
        """Close the windows whose time is up and send the emails that are due."""
        for window in self._windows.close_due(now):
            studies = split_by_study(window.held)
            log.info("window.closed", destination=window.destination, events=len(window.held), studies=len(studies))
            for group in studies:
                summary = summarize_study([h.event for h in group.held])
                self._pending.append(PendingEmail(summary, group.held, due=now, held_since=window.opened_at))
        due = sorted((p for p in self._pending if p.due <= now), key=lambda p: p.due)
        for index, pending in enumerate(due):
            if self._stop.is_set():
                return
            if self._send(pending, now) is _Attempt.UNREACHABLE:
                # Every other email would wait for the same timeout: they try again with this one.
                for later in due[index + 1 :]:
                    later.due = max(later.due, pending.due)
                break

    def next_wakeup(self) -> float | None:
        """When `flush` has work next: a window closing or an email due."""
        times = [p.due for p in self._pending]
        deadline = self._windows.next_deadline()
        if deadline is not None:
            times.append(deadline)
        return min(times) if times else None

    def forget_held(self) -> None:
        """Drop every window and pending email: their tokens are stale, their events will come again."""
        dropped = self._windows.discard_all() + sum(len(p.held) for p in self._pending)
        self._pending.clear()
        if dropped:
            log.warning("events.redelivery-expected", events=dropped, reason="connection to RabbitMQ lost")
        for destination in self._destinations:
            self._update_gauges(destination)

    def pending(self) -> list[PendingEmail[T]]:
        return list(self._pending)

    def _send(self, pending: PendingEmail[T], now: float) -> _Attempt:
        destination = pending.destination
        summary = pending.summary
        try:
            message = compose(summary, self._destinations[destination], self._sender, pending.event_ids())
            refused = self._mailer.send(message)
        except DeliveryError as exc:
            self._retry_later(pending, now, exc.reason)
            return _Attempt.UNREACHABLE if isinstance(exc, SmtpUnavailable) else _Attempt.REFUSED
        except Exception as exc:  # a bug must not lose the events: keep them and retry
            log.error("notification.crashed", exc_info=True, destination=destination)
            self._retry_later(pending, now, f"{type(exc).__name__}")
            return _Attempt.REFUSED
        self._pending.remove(pending)
        for held in pending.held:
            self._settle(held.token, Disposition.DONE)
        NOTIFICATIONS.labels(destination, "sent").inc()
        log.info(
            "notification.sent",
            destination=destination,
            study_instance_uid=summary.study_uid or "-",
            events=len(pending.held),
            series=len(summary.series),
            sent=summary.sent,
            failed=summary.failed,
            rejected=summary.rejected,
            attempts=pending.attempts + 1,
            refused_recipients=refused,
        )
        self._update_gauges(destination)
        return _Attempt.SENT

    def _retry_later(self, pending: PendingEmail[T], now: float, reason: str) -> None:
        delay = self._retry_delays[min(pending.attempts, len(self._retry_delays) - 1)]
        pending.attempts += 1
        pending.due = now + delay
        if pending.due - pending.held_since > MAX_HOLD_SECONDS:
            self._pending.remove(pending)
            for held in pending.held:
                self._settle(held.token, Disposition.RETURN)
            NOTIFICATIONS.labels(pending.destination, "requeued").inc()
            log.warning(
                "notification.events-requeued",
                destination=pending.destination,
                study_instance_uid=pending.summary.study_uid or "-",
                reason=reason,
                attempts=pending.attempts,
                events=len(pending.held),
                held_for=round(now - pending.held_since),
            )
            self._update_gauges(pending.destination)
            return
        NOTIFICATIONS.labels(pending.destination, "retried").inc()
        log.warning(
            "notification.retry-scheduled",
            destination=pending.destination,
            study_instance_uid=pending.summary.study_uid or "-",
            reason=reason,
            attempts=pending.attempts,
            retry_in=delay,
        )

    def _update_gauges(self, destination: str) -> None:
        pending = [p for p in self._pending if p.destination == destination]
        WINDOWS_OPEN.labels(destination).set(1 if self._windows.is_open(destination) else 0)
        EVENTS_HELD.labels(destination).set(self._windows.held_count(destination) + sum(len(p.held) for p in pending))
        EMAILS_PENDING.labels(destination).set(len(pending))

    def _take(self, item: _Arrival[T] | _ConnectionLost) -> None:
        if isinstance(item, _ConnectionLost):
            self.forget_held()
            return
        try:
            self.receive(item.event, item.token, self._clock())
        except Exception:  # an event this code cannot take is parked, never left unsettled
            log.error("event.crashed", exc_info=True)
            self._settle(item.token, Disposition.POISON)

    def _run(self) -> None:
        while not self._stop.is_set():
            wakeup = self.next_wakeup()
            timeout = 0.5 if wakeup is None else min(0.5, max(0.0, wakeup - self._clock()))
            try:
                item: _Arrival[T] | _ConnectionLost | None = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            while item is not None:
                self._take(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    item = None
            try:
                self.flush(self._clock())
            except Exception:  # keep serving; the events stay unacked and come back
                log.error("notifier.crashed", exc_info=True)
            for destination in self._destinations:
                self._update_gauges(destination)
