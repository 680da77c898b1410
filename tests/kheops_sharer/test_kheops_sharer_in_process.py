"""The kheops-sharer in-process against RabbitMQ, a fake Kheops API, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import delete, select

from karnak_kheops_sharer.main import KheopsSharerService
from karnak_kheops_sharer.settings import KheopsSharerSettings
from karnak_shared.broker import Publisher
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.database import KheopsShare, open_database
from karnak_shared.deadletters import DeadLetterQueue, ParkedMessage
from karnak_shared.envelope import SHARE_ROUTING_KEY, ShareRequest
from karnak_shared.topology import Topology
from tests.conftest import gateway_config, register_topology
from tests.support.databases import postgres_database
from tests.support.kheops import Call, FakeKheops, Token
from tests.support.servers import wait_until

pytestmark = pytest.mark.integration

STUDY = "2.25.100"
SOURCE, DESTINATION = "source-token-5f2b", "destination-token-9c1d"


@dataclass
class RunningSharer:
    config: GatewayConfig
    topology: Topology
    service: KheopsSharerService
    publisher: Publisher
    kheops: FakeKheops
    destination: str

    def share(self, series: str, album: int = 0) -> None:
        request = ShareRequest(
            destination=self.destination,
            album=album,
            study_instance_uid=STUDY,
            series_instance_uid=series,
            forward_node="KARNAK-GW",
        )
        self.publisher.publish(
            self.topology.events_exchange, SHARE_ROUTING_KEY, request.to_body(), request.to_headers()
        )

    def parked(self) -> list[ParkedMessage]:
        dead = DeadLetterQueue.connect(self.config)
        try:
            return dead.list()
        finally:
            dead.close()

    def shares(self) -> list[Call]:
        return self.kheops.calls_of("PUT")


@pytest.fixture
def kheops() -> Iterator[FakeKheops]:
    fake = FakeKheops(
        tokens={SOURCE: Token(frozenset({"read", "send"})), DESTINATION: Token(frozenset({"read", "write"}))}
    )
    yield fake
    fake.stop()


@pytest.fixture
def start_sharer(
    amqp_url: str, prefix: str, tmp_path: Path, kheops: FakeKheops
) -> Iterator[Callable[..., RunningSharer]]:
    started: list[RunningSharer] = []

    def start(database_url: str | None = None, destination: str = "kheops-main", **settings: Any) -> RunningSharer:
        albums = [{"url_api": kheops.url_api, "token_source": SOURCE, "token_destination": DESTINATION}]
        stow = {"id": destination, "type": "stow", "url": "http://127.0.0.1:9/studies", "kheops_albums": albums}
        raw = gateway_config(amqp_url, prefix, tmp_path, [stow])
        raw["broker"]["retry_delays"] = [1, 2]
        raw["database"] = {"url": database_url or f"sqlite:///{tmp_path / 'karnak.db'}"}
        config = parse_config(json.dumps(raw))
        topology = register_topology(amqp_url, config)
        service = KheopsSharerService(config, topology, KheopsSharerSettings(**settings)).start()
        publisher = Publisher(amqp_url, service.topology, confirm_timeout=10).start()
        running = RunningSharer(config, service.topology, service, publisher, kheops, destination)
        started.append(running)
        wait_until(lambda: service.connected, 15, "sharer connected to RabbitMQ")
        return running

    yield start
    for running in started:
        running.service.stop()
        running.publisher.stop()
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        connection.channel().queue_delete(running.topology.kheops_queue)
        connection.close()


def test_each_series_is_shared_once_with_both_tokens_after_introspecting_them(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops
) -> None:
    sharer = start_sharer()
    for series in ("2.25.1", "2.25.1", "2.25.2", "2.25.1"):
        sharer.share(series)
    wait_until(lambda: len(sharer.shares()) >= 2, 20, "two shares")
    wait_until(lambda: sharer.service.consumer is not None and sharer.service.consumer.in_flight == 0, 10, "idle")
    introspections = kheops.calls_of("POST")
    assert introspections == [
        Call("POST", "/api/token/introspect", f"Bearer {SOURCE}", None, {"token": SOURCE}),
        Call("POST", "/api/token/introspect", f"Bearer {DESTINATION}", None, {"token": DESTINATION}),
    ]
    assert sorted(sharer.shares(), key=lambda c: c.path) == [
        Call("PUT", f"/api/studies/{STUDY}/series/2.25.1", f"Bearer {DESTINATION}", f"Bearer {SOURCE}", {}),
        Call("PUT", f"/api/studies/{STUDY}/series/2.25.2", f"Bearer {DESTINATION}", f"Bearer {SOURCE}", {}),
    ]
    assert sorted(kheops.albums[DESTINATION]) == [(STUDY, "2.25.1"), (STUDY, "2.25.2")]
    assert sharer.parked() == []


def test_a_500_from_kheops_is_retried_with_back_off_until_the_share_succeeds(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops
) -> None:
    kheops.forced_shares = [500]
    sharer = start_sharer()
    sharer.share("2.25.7")
    wait_until(lambda: kheops.albums.get(DESTINATION) == [(STUDY, "2.25.7")], 20, "shared after the retry")
    assert [c.path for c in sharer.shares()] == [f"/api/studies/{STUDY}/series/2.25.7"] * 2
    assert sharer.parked() == []


def test_a_destination_token_without_write_is_reported_once_and_its_shares_parked(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops, caplog: pytest.LogCaptureFixture
) -> None:
    kheops.tokens[DESTINATION] = Token(frozenset({"read"}))
    caplog.set_level(logging.INFO)
    sharer = start_sharer()
    for series in ("2.25.1", "2.25.2", "2.25.3"):
        sharer.share(series)
    wait_until(lambda: len(sharer.parked()) >= 3, 20, "three parked shares")
    assert sharer.shares() == []
    assert len(kheops.calls_of("POST")) == 2  # introspected once for the album, not per series
    reports = [r for r in caplog.records if r.getMessage() == "kheops.token-refused"]
    assert len(reports) == 1
    assert all(
        p.reason.endswith("the destination token lacks the scope(s) write (needs write)") for p in sharer.parked()
    )
    text = caplog.text + " ".join(p.reason for p in sharer.parked())
    assert SOURCE not in text and DESTINATION not in text


def test_a_token_kheops_does_not_know_answers_401_and_is_parked(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops
) -> None:
    del kheops.tokens[SOURCE]
    sharer = start_sharer()
    sharer.share("2.25.1")
    wait_until(lambda: len(sharer.parked()) >= 1, 20, "parked share")
    (parked,) = sharer.parked()
    assert parked.reason.endswith("the source token was refused by the introspection (HTTP 401)")
    assert parked.destination == "kheops-main"
    assert sharer.shares() == []


def test_a_share_kheops_forbids_with_403_is_parked_with_the_status(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops
) -> None:
    kheops.forced_shares = [403]
    sharer = start_sharer()
    sharer.share("2.25.1")
    wait_until(lambda: len(sharer.parked()) >= 1, 20, "parked share")
    (parked,) = sharer.parked()
    assert "answered HTTP 403: a token is not allowed to share this series" in parked.reason
    assert len(sharer.shares()) == 1


def test_an_introspection_answering_500_is_retried(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops
) -> None:
    kheops.forced_introspections = [500]
    sharer = start_sharer()
    sharer.share("2.25.9")
    wait_until(lambda: kheops.albums.get(DESTINATION) == [(STUDY, "2.25.9")], 20, "shared after the retry")
    assert len(kheops.calls_of("POST")) == 3


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    try:
        with postgres_database() as url:
            yield url
    except RuntimeError as exc:  # report how to get the database, never skip
        pytest.fail(str(exc), pytrace=False)


def test_shares_are_recorded_in_postgresql_once_per_album_and_series(
    start_sharer: Callable[..., RunningSharer], kheops: FakeKheops, postgres_url: str
) -> None:
    sessions = open_database(postgres_url)
    destination = f"kheops-{uuid.uuid4().hex[:8]}"
    sharer = start_sharer(postgres_url, destination=destination)
    try:
        sharer.share("2.25.31")
        sharer.share("2.25.32")
        wait_until(lambda: len(sharer.shares()) >= 2, 20, "two shares")
        sharer.share("2.25.31")  # already recorded: no third PUT
        wait_until(lambda: sharer.service.consumer is not None and sharer.service.consumer.in_flight == 0, 10, "idle")
        with sessions() as session:
            rows = session.execute(select(KheopsShare).where(KheopsShare.destination == destination)).scalars().all()
        assert sorted((r.album, r.series_instance_uid, r.study_instance_uid) for r in rows) == [
            (f"0:{kheops.url_api}", "2.25.31", STUDY),
            (f"0:{kheops.url_api}", "2.25.32", STUDY),
        ]
        assert all(SOURCE not in r.album and DESTINATION not in r.album for r in rows)
        assert len(sharer.shares()) == 2
    finally:
        with sessions() as session:
            session.execute(delete(KheopsShare).where(KheopsShare.destination == destination))
            session.commit()
