"""The notifier against the real RabbitMQ and a real SMTP server (aiosmtpd) of the test.

Events are published to the gateway's events exchange as the processor and the senders publish them; the
notifier runs in-process, or as a `karnak run notifier` process where the test kills it.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pika
import pytest
import yaml
from prometheus_client import REGISTRY

from karnak_notifier.main import NotifierService
from karnak_notifier.main import Notifying as NotifierState
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.envelope import TransferEvent
from karnak_shared.service import ServiceRunner
from karnak_shared.service.authentication import Signer
from karnak_shared.topology import Topology
from tests.conftest import gateway_config
from tests.support.servers import free_port, metric_value, wait_until

pytestmark = pytest.mark.integration

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    AIOSMTPD_MISSING = ""
except ImportError as exc:  # a missing tool is a failure with instructions, never a skip
    AIOSMTPD_MISSING = str(exc)

DESTINATION = "research-pacs"
PATIENT_ID = "PSEUDO-PID-93F1C"
STUDY_DESCRIPTION = "SECRET STUDY DESCRIPTION 4471 OF A VERY LONG KIND"
SERIES_DESCRIPTIONS = ("T1 MPRAGE SAG", "DWI 3 SCANS TRACE", "LOCALIZER")


# --- a real SMTP server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    encrypted: bool
    login: str | None

    @property
    def subject(self) -> str:
        # Python folds a subject just too long for the "Subject: " line onto the next line whole; unfolded,
        # that leaves a leading space, which mail readers drop as part of the folding.
        return str(self.message["Subject"]).lstrip(" ")

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "the email has no text/plain part"
        return str(part.get_content()).replace("\r\n", "\n")  # as sent over SMTP, with CRLF

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None, "the email has no text/html part"
        return str(part.get_content())


class _Collector:
    def __init__(self, refuse_recipients: bool) -> None:
        self.received: list[ReceivedMail] = []
        self.lock = threading.Lock()
        self.refuse_recipients = refuse_recipients

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if self.refuse_recipients:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        encrypted = server.transport.get_extra_info("ssl_object") is not None
        login = session.auth_data if session.authenticated else None
        with self.lock:
            self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, encrypted, login))
        return "250 2.0.0 accepted"


class MailServer:
    """aiosmtpd on 127.0.0.1, keeping every email it accepts."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        credentials: tuple[str, str] | None = None,
        refuse_recipients: bool = False,
    ) -> None:
        if AIOSMTPD_MISSING:
            pytest.fail(
                f"the notifier tests need aiosmtpd as their SMTP server ({AIOSMTPD_MISSING}): "
                "`.venv/bin/pip install aiosmtpd` (listed in requirements-dev.txt)",
                pytrace=False,
            )
        self.port = port or free_port()
        self._collector = _Collector(refuse_recipients)
        options: dict[str, Any] = {}
        if tls_context is not None and implicit_tls:
            options["ssl_context"] = tls_context
        elif tls_context is not None:
            options["tls_context"] = tls_context
        if credentials is not None:
            options.update(
                authenticator=self._authenticator(credentials),
                auth_required=True,
                # Over implicit TLS the session is encrypted from the start; aiosmtpd only knows STARTTLS.
                auth_require_tls=not implicit_tls,
            )
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port, **options)

    @staticmethod
    def _authenticator(credentials: tuple[str, str]) -> Callable[..., Any]:
        def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == credentials
            # handled=False: aiosmtpd then answers 535 itself (handled=True would leave the client waiting).
            return AuthResult(success=ok, handled=False, auth_data=data.login.decode() if ok else None)

        return check

    def start(self) -> MailServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[ReceivedMail]:
        with self._collector.lock:
            return list(self._collector.received)


# --- events and configuration --------------------------------------------------------------------------


def study_events(
    study_uid: str,
    series: list[tuple[str, int, int, int]],
    *,
    destination: str = DESTINATION,
    patient_id: str = PATIENT_ID,
    study_description: str = STUDY_DESCRIPTION,
    first_instance: int = 1,
) -> list[TransferEvent]:
    """Events of a study: per series (description, sent, failed, rejected), as the services publish them."""
    events = []
    number = first_instance
    for s, (description, *counts) in enumerate(series, start=1):
        series_uid = f"{study_uid}.{s}"
        kinds: list[Literal["sent", "failed", "rejected"]] = ["sent", "failed", "rejected"]
        for kind, count in zip(kinds, counts, strict=True):
            for _ in range(count):
                reason = {
                    "sent": None,
                    "failed": "gave up after 4 attempts: PACS (PACS@10.0.0.9:104) answered 0xA700 (Out of resources)",
                    "rejected": f"Condition of destination {destination} is not met",
                }[kind]
                events.append(
                    TransferEvent(
                        kind=kind,
                        destination=destination,
                        forward_node="KARNAK-GW",
                        instance_id=f"{study_uid}-{number}",
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                        sop_instance_uid=f"{series_uid}.{number}",
                        study_instance_uid=study_uid,
                        series_instance_uid=series_uid,
                        reason=reason,
                        received_at=time.time(),
                        display={
                            "PatientID": patient_id,
                            "StudyDescription": study_description,
                            "StudyDate": "20260314",
                            "SeriesDescription": description,
                        },
                    )
                )
                number += 1
    return events


THREE_SERIES = [(SERIES_DESCRIPTIONS[0], 4, 0, 0), (SERIES_DESCRIPTIONS[1], 2, 2, 0), (SERIES_DESCRIPTIONS[2], 0, 0, 3)]


class EventBus:
    """Publishes events with confirms to the gateway's events exchange; reads queue depths.

    A connection per call, so the bus works on after the test closed the broker's connections.
    """

    def __init__(self, url: str, topology: Topology, signer: Signer) -> None:
        self.url = url
        self.topology = topology
        self.signer = signer  # events signed as the senders sign them: the runtime parks unsigned ones

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        channel = connection.channel()
        channel.confirm_delivery()
        return connection, channel

    def publish(self, events: list[TransferEvent]) -> None:
        connection, channel = self._channel()
        try:
            for event in events:
                channel.basic_publish(
                    self.topology.events_exchange,
                    event.routing_key,
                    event.to_body(),
                    properties=pika.BasicProperties(delivery_mode=2, headers=self.signer.sign({}, event.to_body())),
                    mandatory=True,  # the notifier's queue must exist: nothing may be dropped unseen
                )
        finally:
            connection.close()

    def publish_raw(self, body: bytes, routing_key: str) -> None:
        connection, channel = self._channel()
        try:
            properties = pika.BasicProperties(headers=self.signer.sign({}, body))
            channel.basic_publish(self.topology.events_exchange, routing_key, body, properties, mandatory=True)
        finally:
            connection.close()

    def depth(self, queue: str) -> int:
        connection, channel = self._channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        finally:
            connection.close()


@dataclass
class Setup:
    raw: dict[str, Any]
    config: GatewayConfig
    topology: Topology
    bus: EventBus
    mail_port: int
    workdir: Path

    def write(self) -> Path:
        path = self.workdir / "karnak.yml"
        path.write_text(yaml.safe_dump(self.raw, sort_keys=False))
        return path


@pytest.fixture
def setup(amqp_url: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    """Builds a configuration with one notified destination; deletes its topology afterwards."""
    made: list[Setup] = []

    def make(interval: int = 1, url: str | None = None, **notifications: Any) -> Setup:
        url = url or amqp_url
        mail_port = free_port()
        destination = {
            "id": DESTINATION,
            "type": "dicom",
            "ae_title": "PACS",
            "hostname": "127.0.0.1",
            "port": 104,
            "notifications": {"emails": "team@hospital.org, pi@university.ch", "interval": interval, **notifications},
        }
        quiet = {"id": "quiet-pacs", "type": "dicom", "ae_title": "QUIET", "hostname": "127.0.0.1", "port": 104}
        raw = gateway_config(url, prefix, tmp_path, [destination, quiet])
        raw["smtp"] = {"host": "127.0.0.1", "port": mail_port, "sender": "karnak@hospital.org"}
        raw["metrics"]["ports"]["notifier"] = free_port()
        config = parse_config(json.dumps(raw))
        topology = replace(Topology.from_config(config), notifier=True)
        connection = pika.BlockingConnection(pika.URLParameters(url))
        topology.declare(connection.channel())  # as the notifier will: events published first are kept
        connection.close()
        made.append(
            Setup(
                raw, config, topology, EventBus(url, topology, Signer(config.secrets.key_bytes())), mail_port, tmp_path
            )
        )
        return made[-1]

    yield make
    for s in made:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(s.bus.url))
        except pika.exceptions.AMQPError:
            continue  # its virtual host is gone, and its queues with it
        s.topology.delete(connection.channel())
        connection.close()


Notifying = ServiceRunner[NotifierState]


@pytest.fixture
def running() -> Iterator[Callable[[GatewayConfig], Notifying]]:
    """Starts notifiers on the runtime in-process (metrics on a free port) and stops them after the test."""
    runners: list[Notifying] = []

    def start(config: GatewayConfig) -> Notifying:
        runner: Notifying = ServiceRunner(NotifierService(), config, metrics_port=0).start()
        runners.append(runner)
        wait_until(lambda: ready(runner), 15, "notifier ready (consuming its queue)")
        return runner

    yield start
    for runner in runners:
        runner.stop()


def ready(runner: Notifying) -> bool:
    return runner.ops is not None and not runner.ops.failing_checks()


@pytest.fixture
def private_vhost(amqp_url: str, prefix: str) -> Iterator[str]:
    """The URL of a RabbitMQ virtual host of this test alone, whose connections the test may close."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    parsed = urllib.parse.urlsplit(amqp_url)
    if rabbitmqctl is None or parsed.hostname not in ("localhost", "127.0.0.1"):
        pytest.fail(
            "this test closes the notifier's connection with rabbitmqctl on the broker's machine: run it where "
            f"RabbitMQ runs (rabbitmqctl: {rabbitmqctl or 'not installed'}, broker at {parsed.hostname})",
            pytrace=False,
        )
    user = urllib.parse.unquote(parsed.username or "guest")
    subprocess.run([rabbitmqctl, "-q", "add_vhost", prefix], check=True, capture_output=True, timeout=60)
    subprocess.run(
        [rabbitmqctl, "-q", "set_permissions", "-p", prefix, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield urllib.parse.urlunsplit(parsed._replace(path="/" + urllib.parse.quote(prefix, safe="")))
    subprocess.run([rabbitmqctl, "-q", "delete_vhost", prefix], capture_output=True, timeout=60)


def close_connections(vhost: str) -> None:
    rabbitmqctl = shutil.which("rabbitmqctl")
    assert rabbitmqctl is not None
    subprocess.run(
        [rabbitmqctl, "-q", "close_all_connections", "--vhost", vhost, "closed by the test"],
        check=True,
        capture_output=True,
        timeout=60,
    )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def stop_and_count_left(service: Notifying, s: Setup) -> int:
    """Stop the notifier (its unacked deliveries go back to the queue) and count the messages left."""
    service.stop()
    return s.bus.depth(s.topology.notifier_queue)


# --- the tests ----------------------------------------------------------------------------------------


def test_a_study_of_three_series_with_failures_and_rejections_gives_exactly_one_email(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(interval=1)
    mail = MailServer(s.mail_port).start()
    try:
        service = running(s.config)
        sent_before = counter("karnak_notifications_sent_total", destination=DESTINATION, outcome="sent")
        s.bus.publish(study_events("2.25.7001", THREE_SERIES))
        wait_until(lambda: len(mail.received) >= 1, 15, "the study's email")
        time.sleep(2.5)  # longer than the window: a second email would have come by now
        (email,) = mail.received
    finally:
        mail.stop()
    assert email.sender == "karnak@hospital.org"
    assert email.recipients == ["team@hospital.org", "pi@university.ch"]
    # The failed instances win over the rejected ones; the description is cut at 30 characters.
    assert email.subject == f"ERROR [Karnak Notification] {PATIENT_ID} {STUDY_DESCRIPTION[:30]}"
    text = email.text
    assert "from KARNAK-GW to research-pacs" in text
    assert f"Patient ID: {PATIENT_ID}" in text
    assert f"Study description: {STUDY_DESCRIPTION}" in text
    assert "Study date: 2026-03-14" in text
    assert "Study Instance UID: 2.25.7001" in text
    assert "Instances: 6 sent, 2 failed, 3 rejected" in text
    assert "Series: T1 MPRAGE SAG\n  Series Instance UID: 2.25.7001.1\n  Sent: 4, failed: 0, rejected: 0" in text
    assert "Series: DWI 3 SCANS TRACE\n  Series Instance UID: 2.25.7001.2\n  Sent: 2, failed: 2, rejected: 0" in text
    assert text.count("answered 0xA700 (Out of resources)") == 1  # distinct reasons, listed once
    assert "Series: LOCALIZER\n  Series Instance UID: 2.25.7001.3\n  Sent: 0, failed: 0, rejected: 3" in text
    assert "    - rejected: Condition of destination research-pacs is not met" in text
    assert "<td>2</td><td>2</td><td>0</td>" in email.html
    assert counter("karnak_notifications_sent_total", destination=DESTINATION, outcome="sent") == sent_before + 1
    assert stop_and_count_left(service, s) == 0, "every event is acked once its email was sent"


def test_only_rejections_give_the_rejection_prefix_and_a_configured_pattern(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(
        interval=1,
        rejection_prefix="[REFUSED]",
        subject_pattern="Karnak %2$s (%1$.10s) 100%%",
        subject_values=["StudyDescription", "StudyDate"],
    )
    mail = MailServer(s.mail_port).start()
    try:
        running(s.config)
        s.bus.publish(study_events("2.25.7002", [("AX", 2, 0, 1)]))
        wait_until(lambda: len(mail.received) >= 1, 15, "the study's email")
        assert mail.received[0].subject == "[REFUSED] Karnak 20260314 (SECRET STU) 100%"
    finally:
        mail.stop()


def test_two_studies_in_one_window_give_two_emails_each_with_its_own_counts(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(interval=2)
    mail = MailServer(s.mail_port).start()
    try:
        service = running(s.config)
        first = study_events("2.25.8001", [("CT AX", 3, 0, 0)], study_description="FIRST STUDY")
        second = study_events("2.25.8002", [("MR T2", 1, 1, 0)], study_description="SECOND STUDY", first_instance=100)
        # Interleaved, with one event published twice (events are published at least once).
        s.bus.publish([first[0], second[0], first[1], second[1], second[1], first[2]])
        # Events of a destination without notifications are acked and emailed to nobody.
        s.bus.publish(study_events("2.25.8003", [("X", 2, 0, 0)], destination="quiet-pacs"))
        wait_until(lambda: len(mail.received) >= 2, 15, "two emails")
        time.sleep(3)
        by_subject = {m.subject: m for m in mail.received}
    finally:
        mail.stop()
    assert set(by_subject) == {
        f"[Karnak Notification] {PATIENT_ID} FIRST STUDY",
        f"ERROR [Karnak Notification] {PATIENT_ID} SECOND STUDY",
    }
    assert (
        "Instances: 3 sent, 0 failed, 0 rejected" in by_subject[f"[Karnak Notification] {PATIENT_ID} FIRST STUDY"].text
    )
    second_text = by_subject[f"ERROR [Karnak Notification] {PATIENT_ID} SECOND STUDY"].text
    assert "Instances: 1 sent, 1 failed, 0 rejected" in second_text  # the repeated event counted once
    assert stop_and_count_left(service, s) == 0


def test_events_arriving_after_the_window_closed_open_a_new_window(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(interval=1)
    mail = MailServer(s.mail_port).start()
    try:
        running(s.config)
        s.bus.publish(study_events("2.25.9001", [("CT AX", 2, 0, 0)]))
        wait_until(lambda: len(mail.received) >= 1, 15, "the first window's email")
        s.bus.publish(study_events("2.25.9001", [("CT AX", 0, 1, 0)], first_instance=50))
        wait_until(lambda: len(mail.received) >= 2, 15, "the second window's email")
        time.sleep(2)
        first, second = mail.received
    finally:
        mail.stop()
    assert "Instances: 2 sent, 0 failed, 0 rejected" in first.text
    assert not first.subject.startswith("ERROR")
    assert "Instances: 0 sent, 1 failed, 0 rejected" in second.text
    assert second.subject.startswith("ERROR ")


def test_with_the_smtp_server_down_the_events_wait_and_one_email_goes_once_it_is_up(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(interval=1)
    service = running(s.config)
    retried_before = counter("karnak_notifications_sent_total", destination=DESTINATION, outcome="retried")
    s.bus.publish(study_events("2.25.9101", THREE_SERIES))
    wait_until(
        lambda: (
            counter("karnak_notifications_sent_total", destination=DESTINATION, outcome="retried") >= retried_before + 2
        ),
        20,
        "two failed SMTP attempts",
    )
    assert counter("karnak_notification_events_held", destination=DESTINATION) == 11
    assert counter("karnak_notification_emails_pending", destination=DESTINATION) == 1
    mail = MailServer(s.mail_port).start()
    try:
        wait_until(lambda: len(mail.received) >= 1, 20, "the email once the SMTP server is up")
        time.sleep(3)
        (email,) = mail.received
    finally:
        mail.stop()
    assert "Instances: 6 sent, 2 failed, 3 rejected" in email.text
    assert counter("karnak_notification_events_held", destination=DESTINATION) == 0
    assert stop_and_count_left(service, s) == 0


def test_a_connection_lost_mid_window_loses_no_event_and_sends_one_email(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying], private_vhost: str
) -> None:
    s = setup(interval=4, url=private_vhost)
    mail = MailServer(s.mail_port).start()
    try:
        service = running(s.config)
        s.bus.publish(study_events("2.25.9301", THREE_SERIES))
        wait_until(lambda: counter("karnak_notification_events_held", destination=DESTINATION) == 11, 10, "events held")
        close_connections(urllib.parse.unquote(urllib.parse.urlsplit(private_vhost).path[1:]))
        assert mail.received == [], "the window closed before the connection did: the test proves nothing"
        wait_until(lambda: len(mail.received) >= 1, 30, "the email after the reconnection")
        time.sleep(5)  # more than a window: the held events' window would have sent a duplicate by now
        (email,) = mail.received
    finally:
        mail.stop()
    assert "Instances: 6 sent, 2 failed, 3 rejected" in email.text
    assert stop_and_count_left(service, s) == 0


def test_a_message_that_is_not_an_event_is_dead_lettered(
    setup: Callable[..., Setup], running: Callable[[GatewayConfig], Notifying]
) -> None:
    s = setup(interval=1)
    running(s.config)
    s.bus.publish_raw(b"not an event", f"transfer.sent.{DESTINATION}")
    wait_until(lambda: s.bus.depth(s.topology.dead_queue) == 1, 10, "the message in the dead-letter queue")


def test_killed_and_restarted_mid_window_the_notifier_sends_exactly_one_email_and_logs_no_patient_data(
    setup: Callable[..., Setup],
) -> None:
    s = setup(interval=2)
    s.raw["logging"] = {"level": "DEBUG"}
    config_path = s.write()
    port = s.raw["metrics"]["ports"]["notifier"]
    log_path = s.workdir / "notifier.log"
    karnak = str(Path(sys.executable).with_name("karnak"))

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [karnak, "run", "notifier", "--config", str(config_path), "--metrics-port", str(port)],
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: _ready(port, process, log_path), 30, f"notifier ready (see {log_path})")
        return process

    def held() -> float:
        return metric_value(_get(port, "/metrics"), "karnak_notification_events_held", destination=DESTINATION)

    mail = MailServer(s.mail_port).start()
    process = start()
    try:
        events = study_events("2.25.9201", THREE_SERIES)
        s.bus.publish(events)
        wait_until(lambda: held() == len(events), 10, "the events held in the open window")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert mail.received == [], "the window closed before the kill: the test proves nothing"
        process = start()
        wait_until(lambda: len(mail.received) >= 1, 20, "the email after the restart")
        time.sleep(5)  # two more windows' time: a duplicate would be here by now
        (email,) = mail.received
        assert "Instances: 6 sent, 2 failed, 3 rejected" in email.text
        wait_until(lambda: held() == 0, 10, "nothing held after the email")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        mail.stop()
    assert s.bus.depth(s.topology.notifier_queue) == 0
    log = log_path.read_text(errors="replace")
    assert "notification.sent" in log and "window.opened" in log
    for value in (PATIENT_ID, STUDY_DESCRIPTION[:12], "SECRET", *SERIES_DESCRIPTIONS, "20260314"):
        assert value not in log, f"the notifier's log shows {value!r}"


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
        return str(answer.read().decode())


def _ready(port: int, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the notifier exited with {process.returncode}:\n{log_path.read_text()}")
    try:
        _get(port, "/readyz")
        return True
    except OSError:
        return False


def _config_without_notifications(amqp_url: str, prefix: str, tmp_path: Path) -> GatewayConfig:
    quiet = {"id": "quiet-pacs", "type": "dicom", "ae_title": "QUIET", "hostname": "127.0.0.1", "port": 104}
    raw = gateway_config(amqp_url, prefix, tmp_path, [quiet])
    raw["metrics"]["ports"]["notifier"] = free_port()
    return parse_config(json.dumps(raw))


def test_a_notifier_with_no_notified_destination_declares_no_queue_and_is_ready(
    amqp_url: str,
    prefix: str,
    tmp_path: Path,
    running: Callable[[GatewayConfig], Notifying],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = _config_without_notifications(amqp_url, prefix, tmp_path)

    service = running(config)

    assert ready(service) and service.consumer is not None and service.consumer.queues == []
    # Finding that no queue is left from an earlier configuration is not a warning (pika said one: 404).
    assert not [r for r in caplog.records if r.name.startswith("pika") or "Channel.Close" in r.getMessage()]
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        # Events published now are dropped by the exchange, not piled up in a queue nobody reads.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            channel.queue_declare(Topology.from_config(config).notifier_queue, passive=True)
    finally:
        if connection.is_open:
            connection.close()


def test_an_idle_notifier_drains_a_queue_left_by_an_earlier_configuration(
    amqp_url: str, prefix: str, tmp_path: Path, running: Callable[[GatewayConfig], Notifying]
) -> None:
    config = _config_without_notifications(amqp_url, prefix, tmp_path)
    earlier = replace(Topology.from_config(config), notifier=True)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        earlier.declare(connection.channel())  # as a configuration with notifications left it
    finally:
        connection.close()

    service = running(config)

    # Left alone, the queue would fill up until RabbitMQ blocks every publisher, the receiver included.
    assert service.consumer is not None and service.consumer.queues == [Topology.from_config(config).notifier_queue]
