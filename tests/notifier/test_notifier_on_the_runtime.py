"""The notifier on the runtime's testing kit: what it acks, when, and what it parks (no broker, no SMTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from karnak_notifier.main import NotifierService, Notifying
from karnak_shared.broker import Settlement
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.service.testing import Harness, Message, wait_for
from tests.notifier.test_notifier_flow import MailRoom, body

KEY = "12" * 32


def config(tmp_path: Path, interval: int = 1) -> GatewayConfig:
    destination = {
        "id": "pacs",
        "type": "dicom",
        "ae_title": "PACS",
        "hostname": "127.0.0.1",
        "port": 104,
        "notifications": {"emails": "team@hospital.org", "interval": interval},
    }
    raw = {
        "forward_nodes": [{"ae_title": "KARNAK-GW", "destinations": [destination]}],
        "blob_store": {"path": str(tmp_path / "blobs")},
        "smtp": {"host": "127.0.0.1", "port": 25, "sender": "karnak@hospital.org"},
        "secrets": {"key": KEY},
    }
    return parse_config(json.dumps(raw))


@pytest.fixture
def mail() -> MailRoom:
    return MailRoom()


@pytest.fixture
def harness(tmp_path: Path, mail: MailRoom) -> Harness[Notifying]:
    return Harness(NotifierService(mailer=lambda config: mail), config(tmp_path))


def event_message(harness: Harness[Notifying], payload: bytes) -> Message:
    headers = harness.signer.sign({}, payload)
    return Message(headers, payload, "karnak.events", "transfer.sent.pacs")


def test_an_event_is_acked_only_once_its_email_was_accepted(harness: Harness[Notifying], mail: MailRoom) -> None:
    try:
        handled = harness.deliver(event_message(harness, body("1").to_body()))
        assert handled.settlement is None, "settled before its window closed"
        wait_for(lambda: harness.settlements, timeout=10)
        assert [s for _, s in harness.settlements] == [Settlement.ACK]
        assert len(mail.taken) == 1
    finally:
        harness.runner.service.stop()


def test_a_message_that_is_not_a_transfer_event_is_parked_unread(harness: Harness[Notifying]) -> None:
    try:
        handled = harness.deliver(event_message(harness, b"{not json"))
        assert handled.settlement is Settlement.ACK and handled.cause == "invalid-event"
    finally:
        harness.runner.service.stop()


def test_an_unsigned_event_is_parked(harness: Harness[Notifying]) -> None:
    try:
        payload = body("1").to_body()
        handled = harness.deliver(Message({}, payload, "karnak.events", "transfer.sent.pacs"))
        assert handled.settlement is Settlement.ACK and handled.cause == "unauthenticated"
    finally:
        harness.runner.service.stop()


def test_a_revision_that_leaves_the_notifications_alone_keeps_the_windows(
    harness: Harness[Notifying], tmp_path: Path
) -> None:
    try:
        before = harness.state
        service = harness.runner.service
        assert service.configure(config(tmp_path), harness.runner.providers) is before
        changed = service.configure(config(tmp_path, interval=2), harness.runner.providers)
        assert changed is not before and changed.notifier.alive
        service.release(before)
        assert not before.notifier.alive, "a replaced notifier is stopped once released"
    finally:
        harness.runner.service.stop()
