"""What the notifier takes from the configuration, and what it refuses at start-up."""

from __future__ import annotations

import pytest

from karnak_notifier.settings import MAX_PREFETCH, MIN_PREFETCH, notified_destinations, window_capacity
from karnak_notifier.smtp import SmtpServer
from karnak_shared.config import Notifications, parse_config
from karnak_shared.errors import ConfigError

BASE = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - id: quiet
        type: dicom
        ae_title: QUIET
        hostname: quiet.example
        port: 104
      - id: research-pacs
        type: dicom
        ae_title: PACS
        hostname: pacs.example
        port: 104
        notifications: {NOTIFICATIONS}
smtp: {SMTP}
"""


def config(notifications: str = "{emails: 'team@hospital.org'}", smtp: str = "{host: mail.example}") -> str:
    return BASE.replace("{NOTIFICATIONS}", notifications).replace("{SMTP}", smtp)


def test_only_destinations_with_addresses_are_notified() -> None:
    destinations = notified_destinations(parse_config(config()))
    assert list(destinations) == ["research-pacs"]
    assert destinations["research-pacs"].emails == ["team@hospital.org"]
    assert destinations["research-pacs"].interval == 45


def test_notifications_without_an_address_notify_nobody() -> None:
    assert notified_destinations(parse_config(config("{emails: ''}"))) == {}


def test_a_pattern_with_more_placeholders_than_values_is_refused_naming_the_field() -> None:
    text = config("{emails: 'a@b.ch', subject_pattern: '%s %s %s', subject_values: [PatientID, StudyDate]}")
    with pytest.raises(ConfigError) as caught:
        notified_destinations(parse_config(text))
    (problem,) = caught.value.problems
    assert problem.startswith("forward_nodes[0].destinations[1].notifications.subject_pattern: '%s' needs value")


def test_a_pattern_java_cannot_format_with_text_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"subject_pattern: '%d': unsupported conversion"):
        notified_destinations(parse_config(config("{emails: 'a@b.ch', subject_pattern: 'Study %d'}")))


def test_an_interval_longer_than_rabbitmq_keeps_a_delivery_unacked_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"notifications.interval: must be at most 1500 seconds"):
        notified_destinations(parse_config(config("{emails: 'a@b.ch', interval: 3600}")))


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^smtp.starttls: choose either"):
        notified_destinations(parse_config(config(smtp="{host: mail.example, starttls: true, tls: true}")))


def test_an_invalid_address_is_a_configuration_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"notifications.emails\[1\]: 'nobody' is not an email address"):
        parse_config(config("{emails: 'a@b.ch, nobody'}"))


def test_the_prefetch_holds_a_full_window_of_every_notified_destination() -> None:
    def capacity(*intervals: int) -> int:
        return window_capacity({f"d{i}": Notifications(emails=["a@b.ch"], interval=v) for i, v in enumerate(intervals)})

    assert capacity(45) == 150 * 45
    assert capacity(45, 30) == 150 * 75
    assert capacity(1) == MIN_PREFETCH
    assert capacity() == MIN_PREFETCH
    assert capacity(1500, 1500) == MAX_PREFETCH


def test_the_smtp_password_is_read_from_the_configuration_but_never_printed() -> None:
    text = config(smtp="{host: mail.example, port: 587, starttls: true, username: karnak, password: hunter2-secret}")
    server = SmtpServer.from_config(parse_config(text).smtp)
    assert (server.host, server.port, server.starttls, server.username) == ("mail.example", 587, True, "karnak")
    assert server.password == "hunter2-secret"
    assert "hunter2" not in repr(server) and "hunter2" not in str(server)
