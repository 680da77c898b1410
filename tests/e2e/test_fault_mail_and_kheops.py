"""Faults on purpose for the services after the senders, run as processes (`karnak up --only ...`).

The integration suites cover SMTP and Kheops answering errors (4xx/5xx, refused logins, a server that does
not answer in time). These tests take the peer away altogether for a while, with the service as the
gateway runs it, and check what an operator relies on: a log line saying which peer cannot be reached,
retries, and once the peer is back, everything done exactly once with nothing parked or left queued.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from karnak_shared.config import parse_config
from karnak_shared.envelope import SHARE_ROUTING_KEY, ShareRequest
from karnak_shared.service.authentication import Signer
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.notifier.test_notifier import THREE_SERIES, EventBus, MailServer, study_events
from tests.support.faults import queue_depths, serve_again
from tests.support.kheops import FakeKheops, Token
from tests.support.servers import TEST_SECRETS_KEY, Gateway, free_port, metric_value, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

SOURCE, ALBUM = "source-token-77aa", "album-token-31cf"
STUDY = "2.25.4242"


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.stop()


def test_with_the_smtp_server_down_the_notifier_says_so_retries_and_sends_one_email_once_it_is_up(
    amqp_url: str, prefix: str, tmp_path: Path, gateways: list[Gateway], record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    mail_port = free_port()  # nothing listens here yet
    destination = {
        "id": "research-pacs",
        "type": "dicom",
        "ae_title": "PACS",
        "hostname": "127.0.0.1",
        "port": 104,
        "notifications": {"emails": "team@hospital.org", "interval": 1},
    }
    raw = gateway_config(amqp_url, prefix, tmp_path, [destination])
    raw["broker"]["retry_delays"] = [1, 2, 4]
    raw["smtp"] = {"host": "127.0.0.1", "port": mail_port, "sender": "karnak@hospital.org"}
    raw["metrics"]["ports"] = {"notifier": free_port()}
    config = parse_config(json.dumps(raw))
    topology = register_topology(amqp_url, config)
    gateway = Gateway(raw, tmp_path)
    gateways.append(gateway)
    gateway.start("--only", "notifier")

    def metric(name: str, **labels: str) -> float:
        return metric_value(gateway.metrics("notifier"), name, destination="research-pacs", **labels)

    events = study_events("2.25.7001", THREE_SERIES)
    EventBus(amqp_url, topology, Signer(config.secrets.key_bytes())).publish(events)
    wait_until(lambda: metric("karnak_notifications_sent_total", outcome="retried") >= 2, 30, "two SMTP attempts")
    assert metric("karnak_notification_events_held") == len(events)
    retry_lines = [line for line in gateway.log().splitlines() if "event=notification.retry-scheduled" in line]
    assert retry_lines, gateway.log()[-3000:]
    assert f"cannot connect to the SMTP server 127.0.0.1:{mail_port}" in retry_lines[0], retry_lines[0]

    mail = MailServer(mail_port).start()
    try:
        wait_until(lambda: len(mail.received) >= 1, 30, "the email once the SMTP server is up")
        wait_until(lambda: metric("karnak_notification_events_held") == 0, 10, "events acked after the email")
        time.sleep(3)  # more than the window and the first retry delays: a second email would be here
        (email,) = mail.received
    finally:
        mail.stop()
    assert "Instances: 6 sent, 2 failed, 3 rejected" in email.text
    assert queue_depths(amqp_url, [topology.notifier_queue, topology.dead_queue]) == {
        topology.notifier_queue: 0,
        topology.dead_queue: 0,
    }
    print(
        f"smtp_attempts_failed={int(metric('karnak_notifications_sent_total', outcome='retried'))} "
        f"emails=1 seconds={time.monotonic() - started:.1f}"
    )
    record_property("seconds", round(time.monotonic() - started, 1))


def _publish_shares(url: str, topology: Topology, requests: list[ShareRequest]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for request in requests:
            # Signed with the gateway's key, as the stow-sender signs them (the sharer parks unsigned ones).
            headers = Signer(bytes.fromhex(TEST_SECRETS_KEY)).sign(request.to_headers(), request.to_body())
            channel.basic_publish(
                topology.events_exchange,
                SHARE_ROUTING_KEY,
                request.to_body(),
                properties=pika.BasicProperties(delivery_mode=2, headers=headers),
                mandatory=True,  # the sharer's queue exists once it is ready: nothing may be dropped
            )
    finally:
        connection.close()


def test_with_the_kheops_api_unreachable_shares_wait_in_the_delay_queues_and_each_series_is_shared_once_after(
    amqp_url: str, prefix: str, tmp_path: Path, gateways: list[Gateway], record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    kheops = FakeKheops(tokens={SOURCE: Token(frozenset({"read", "send"})), ALBUM: Token(frozenset({"write"}))})
    port = int(kheops.httpd.server_address[1])
    kheops.stop()  # Kheops is down before anything is shared
    album = {"url_api": kheops.url_api, "token_source": SOURCE, "token_destination": ALBUM}
    stow: dict[str, Any] = {
        "id": "kheops",
        "type": "stow",
        "url": "http://127.0.0.1:9/studies",
        "kheops_albums": [album],
    }
    raw = gateway_config(amqp_url, prefix, tmp_path, [stow])
    raw["broker"]["retry_delays"] = [1, 2, 4, 8]
    raw["database"] = {"url": f"sqlite:///{tmp_path / 'karnak.db'}"}
    raw["metrics"]["ports"] = {"kheops-sharer": free_port()}
    topology = register_topology(amqp_url, parse_config(json.dumps(raw)))
    gateway = Gateway(raw, tmp_path)
    gateways.append(gateway)
    try:
        gateway.start("--only", "kheops-sharer")

        def shares(outcome: str) -> float:
            return metric_value(
                gateway.metrics("kheops-sharer"), "karnak_kheops_shares_total", destination="kheops", outcome=outcome
            )

        series = ["2.25.4242.1", "2.25.4242.2", "2.25.4242.3"]
        requests = [
            ShareRequest(destination="kheops", album=0, study_instance_uid=STUDY, series_instance_uid=s) for s in series
        ]
        # The stow-sender asks again for a series whose batch was retried: the second ask must not share twice.
        _publish_shares(amqp_url, topology, [*requests, requests[0]])
        wait_until(lambda: shares("retried") >= 2 * len(requests) + 2, 30, "every share retried twice")
        down_for = time.monotonic() - started
        retry_lines = [line for line in gateway.log().splitlines() if "event=message.retry-scheduled" in line]
        assert f"token introspection at {kheops.url_api}/token/introspect failed: ConnectionError" in retry_lines[0]

        serve_again(kheops, port)
        wait_until(
            lambda: sorted(kheops.albums.get(ALBUM, [])) == [(STUDY, s) for s in series],
            30,
            "each series shared once Kheops is back",
        )
        wait_until(lambda: shares("shared") + shares("duplicate") >= 4, 20, "the second ask settled")
        wait_until(
            lambda: (
                not any(
                    queue_depths(
                        amqp_url, [f"{prefix}.kheops", *map(topology.retry_queue, topology.retry_delays)]
                    ).values()
                )
            ),
            20,
            "the sharer's queue and the delay queues empty",
        )
    finally:
        kheops.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(f"{prefix}.kheops")
        connection.close()
    assert len(kheops.calls_of("PUT")) == len(series), kheops.calls_of("PUT")
    assert shares("shared") == len(series) and shares("duplicate") == 1
    assert shares("failed") == 0 and shares("refused") == 0
    assert queue_depths(amqp_url, [topology.dead_queue]) == {topology.dead_queue: 0}
    log = gateway.log()
    assert SOURCE not in log and ALBUM not in log, "a Kheops token in the log"
    print(
        f"kheops_down_seconds={down_for:.1f} retries={int(shares('retried'))} puts={len(kheops.calls_of('PUT'))} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    record_property("seconds", round(time.monotonic() - started, 1))
