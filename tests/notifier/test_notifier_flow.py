"""The notifier's flow on a test clock: windows, one email per study, settling only after the send."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

from karnak_notifier.notifier import MAX_HOLD_SECONDS, Disposition, Notifier
from karnak_notifier.smtp import SmtpUnavailable
from karnak_shared.config import Notifications
from karnak_shared.envelope import TransferEvent
from karnak_shared.errors import TransientDeliveryError

NOTIFIED = {"pacs": Notifications(emails=["team@hospital.org"], interval=10)}


def body(
    sop: str,
    kind: Literal["sent", "failed", "rejected", "retried", "duplicate"] = "sent",
    study: str = "2.25.1",
    destination: str = "pacs",
    reason: str | None = None,
) -> TransferEvent:
    return TransferEvent(
        kind=kind,
        destination=destination,
        forward_node="KARNAK-GW",
        instance_id=f"id-{sop}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=sop,
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        reason=reason,
        received_at=0.0,
        display={"PatientID": "PSEUDO-1", "StudyDescription": f"STUDY {study}", "SeriesDescription": "AX"},
    )


@dataclass
class MailRoom:
    """Takes emails like an SMTP server would, or fails with the errors queued in `failures`."""

    failures: list[Exception] = field(default_factory=list)
    taken: list[EmailMessage] = field(default_factory=list)
    attempts: int = 0

    def send(self, message: EmailMessage) -> int:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.taken.append(message)
        return 0


@dataclass
class Settled:
    log: list[tuple[str, Disposition]] = field(default_factory=list)

    def __call__(self, token: str, disposition: Disposition) -> None:
        self.log.append((token, disposition))

    def tokens(self, disposition: Disposition = Disposition.DONE) -> list[str]:
        return [t for t, d in self.log if d is disposition]


def notifier(mail: MailRoom, settled: Settled, delays: tuple[float, ...] = (5, 30)) -> Notifier[str]:
    return Notifier(NOTIFIED, mail, "karnak@hospital.org", settled, retry_delays=delays, clock=lambda: 0.0)


def test_a_study_gets_one_email_when_its_window_closes_and_its_events_settle_after() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1"), "t1", now=0.0)
    n.receive(body("2", "failed", reason="0xA900"), "t2", now=3.0)
    n.receive(body("3", "rejected", reason="condition"), "t3", now=9.9)
    n.flush(9.9)
    assert mail.taken == [] and settled.log == []
    assert n.next_wakeup() == 10.0
    n.flush(10.0)
    (email,) = mail.taken
    assert email["Subject"] == "ERROR [Karnak Notification] PSEUDO-1 STUDY 2.25.1"
    assert settled.tokens() == ["t1", "t2", "t3"]
    assert n.next_wakeup() is None


def test_two_studies_in_a_window_get_two_emails() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1", study="2.25.1"), "a", now=0.0)
    n.receive(body("2", study="2.25.2", kind="rejected", reason="r"), "b", now=1.0)
    n.flush(10.0)
    assert [m["Subject"] for m in mail.taken] == [
        "[Karnak Notification] PSEUDO-1 STUDY 2.25.1",
        "REJECTED [Karnak Notification] PSEUDO-1 STUDY 2.25.2",
    ]
    assert sorted(settled.tokens()) == ["a", "b"]


def test_an_event_after_the_window_closed_goes_into_the_next_email() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1"), "a", now=0.0)
    n.flush(10.0)
    n.receive(body("2", "failed", reason="r"), "b", now=11.0)
    n.flush(20.9)
    assert len(mail.taken) == 1
    n.flush(21.0)
    assert [m["Subject"].startswith("ERROR") for m in mail.taken] == [False, True]


def test_events_of_destinations_without_notifications_are_settled_at_once() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1", destination="unnotified"), "x", now=0.0)
    assert settled.tokens() == ["x"]
    n.flush(100.0)
    assert mail.taken == []


def test_a_retried_event_is_settled_at_once_and_the_final_outcome_is_what_the_email_counts() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1", "retried", reason="HTTP 503"), "retry", now=0.0)
    assert settled.tokens() == ["retry"]
    n.receive(body("1"), "sent", now=1.0)
    n.flush(11.0)
    (email,) = mail.taken
    assert "Sent: 1, failed: 0, rejected: 0" in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "HTTP 503" not in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_an_instance_the_destination_had_already_counts_as_sent_never_as_failed() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1", "duplicate", reason="answered HTTP 409 Conflict"), "dup", now=0.0)
    n.receive(body("2"), "sent", now=0.0)
    n.flush(11.0)
    (email,) = mail.taken
    assert not str(email["Subject"]).startswith("ERROR")
    assert "Sent: 2, failed: 0, rejected: 0" in email.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert settled.tokens() == ["dup", "sent"]


def test_an_smtp_failure_keeps_the_events_and_retries_with_back_off() -> None:
    mail = MailRoom(failures=[SmtpUnavailable("connection refused"), SmtpUnavailable("connection refused")])
    settled = Settled()
    n = notifier(mail, settled, delays=(5, 30))
    n.receive(body("1"), "t1", now=0.0)
    n.flush(10.0)
    assert settled.log == [] and len(n.pending()) == 1
    assert n.next_wakeup() == 15.0
    n.flush(14.9)
    assert mail.attempts == 1
    n.flush(15.0)
    assert mail.attempts == 2 and settled.log == []
    assert n.next_wakeup() == 45.0  # the second delay
    n.flush(45.0)
    assert len(mail.taken) == 1
    assert settled.tokens() == ["t1"]
    assert n.pending() == []


def test_retries_stay_at_the_last_delay() -> None:
    mail = MailRoom(failures=[SmtpUnavailable("down")] * 4)
    n = notifier(mail, Settled(), delays=(1, 2))
    n.receive(body("1"), "t1", now=0.0)
    now, wakeups = 10.0, []
    n.flush(now)
    while mail.taken == []:
        wakeup = n.next_wakeup()
        assert wakeup is not None
        wakeups.append(wakeup - now)
        now = wakeup
        n.flush(now)
    assert wakeups == [1.0, 2.0, 2.0, 2.0]


def test_an_unreachable_server_postpones_the_other_emails_without_trying_them() -> None:
    mail = MailRoom(failures=[SmtpUnavailable("timed out")])
    settled = Settled()
    n = notifier(mail, settled)
    n.receive(body("1", study="2.25.1"), "a", now=0.0)
    n.receive(body("2", study="2.25.2"), "b", now=0.0)
    n.flush(10.0)
    assert mail.attempts == 1
    assert [p.due for p in n.pending()] == [15.0, 15.0]
    n.flush(15.0)
    assert len(mail.taken) == 2 and sorted(settled.tokens()) == ["a", "b"]


def test_an_email_the_server_refuses_does_not_hold_the_others_back() -> None:
    mail = MailRoom(failures=[TransientDeliveryError("550 mailbox unavailable")])
    settled = Settled()
    n = notifier(mail, settled)
    n.receive(body("1", study="2.25.1"), "a", now=0.0)
    n.receive(body("2", study="2.25.2"), "b", now=0.0)
    n.flush(10.0)
    assert mail.attempts == 2
    assert settled.tokens() == ["b"]
    assert [p.summary.study_uid for p in n.pending()] == ["2.25.1"]


def test_after_a_lost_connection_nothing_held_is_sent_or_settled_and_the_redelivery_sends_once() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1"), "old-1", now=0.0)
    n.receive(body("2"), "old-2", now=1.0)
    n.forget_held()
    n.flush(100.0)
    assert mail.taken == [] and settled.log == []
    n.receive(body("1"), "new-1", now=100.0)
    n.receive(body("2"), "new-2", now=100.0)
    n.flush(110.0)
    (email,) = mail.taken
    plain = email.get_body(("plain",))
    assert plain is not None and "Instances: 2 sent, 0 failed, 0 rejected" in plain.get_content()
    assert settled.tokens() == ["new-1", "new-2"]


def test_a_lost_connection_also_drops_emails_waiting_for_a_retry() -> None:
    mail = MailRoom(failures=[SmtpUnavailable("down")])
    settled = Settled()
    n = notifier(mail, settled)
    n.receive(body("1"), "old", now=0.0)
    n.flush(10.0)
    n.forget_held()
    assert n.pending() == [] and n.next_wakeup() is None
    n.flush(1000.0)
    assert settled.log == []


def test_a_duplicate_event_is_settled_with_the_email_but_counted_once() -> None:
    mail, settled = MailRoom(), Settled()
    n = notifier(mail, settled)
    n.receive(body("1"), "first", now=0.0)
    n.receive(body("1"), "again", now=1.0)
    n.flush(10.0)
    plain = mail.taken[0].get_body(("plain",))
    assert plain is not None and "Instances: 1 sent" in plain.get_content()
    assert settled.tokens() == ["first", "again"]


def test_an_email_failing_for_nearly_the_brokers_consumer_timeout_hands_its_events_back() -> None:
    mail = MailRoom(failures=[SmtpUnavailable("down")] * 100)
    settled = Settled()
    n = notifier(mail, settled, delays=(60, 600))
    n.receive(body("1"), "t1", now=0.0)
    n.receive(body("2"), "t2", now=5.0)
    now = 10.0
    n.flush(now)
    while n.pending():
        wakeup = n.next_wakeup()
        assert wakeup is not None
        now = wakeup
        n.flush(now)
    assert mail.attempts == 4  # at 10, 70, 670 and 1270 s; the next one would be past the limit
    assert settled.log == [("t1", Disposition.RETURN), ("t2", Disposition.RETURN)]
    assert now <= MAX_HOLD_SECONDS, "a retry past the hold limit was scheduled"
    assert mail.taken == [] and n.next_wakeup() is None
