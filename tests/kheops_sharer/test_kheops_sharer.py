"""The kheops-sharer's handling of one message, with a scripted Kheops API, SQLite and a recording publisher."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from karnak_kheops_sharer.kheops import Introspection
from karnak_kheops_sharer.main import KheopsSharerService
from karnak_kheops_sharer.records import ShareRecords
from karnak_kheops_sharer.settings import KheopsSharerSettings
from karnak_kheops_sharer.tokens import TokenCheck, token_problem
from karnak_shared import header_names
from karnak_shared.broker import Settlement
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.database import KheopsShare, open_database
from karnak_shared.envelope import ShareRequest
from karnak_shared.errors import EnvelopeError, PermanentDeliveryError, TransientDeliveryError
from karnak_shared.service.testing import Handled, Harness, Message, RecordingPublisher
from karnak_shared.topology import Topology
from tests.shared.test_topology import RecordingChannel

URL_API = "https://kheops.example/api"
STUDY = "2.25.1"
SERIES = "2.25.2"
READ_SEND = Introspection(True, frozenset({"read", "send"}))
WRITE = Introspection(True, frozenset({"write"}))


@dataclass
class ScriptedKheops:
    """Stands in for `KheopsApi`: answers introspections from a table and shares from a script."""

    tokens: dict[str, Introspection] = field(default_factory=lambda: {"src": READ_SEND, "dst": WRITE})
    share_answers: list[int | Exception] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    url_api: str = URL_API

    def introspect(self, token: str) -> Introspection:
        self.calls.append(("introspect", token))
        return self.tokens.get(token, Introspection(False, frozenset()))

    def share_series(self, study_uid: str, series_uid: str, destination_token: str, source_token: str) -> int:
        self.calls.append(("share", study_uid, series_uid, destination_token, source_token))
        answer = self.share_answers.pop(0) if self.share_answers else 201
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def kheops() -> ScriptedKheops:
    return ScriptedKheops()


@pytest.fixture
def records(tmp_path: Path) -> ShareRecords:
    url = f"sqlite:///{tmp_path / 'karnak.db'}"
    return ShareRecords(lambda: open_database(url))


def _config(database_url: str, retry_delays: list[int]) -> GatewayConfig:
    album = {"url_api": URL_API, "token_source": "src", "token_destination": "dst"}
    destination = {"id": "kheops-main", "type": "stow", "url": "https://kheops.example/api", "kheops_albums": [album]}
    return parse_config(
        json.dumps(
            {
                "forward_nodes": [{"ae_title": "KARNAK-GW", "destinations": [destination]}],
                "database": {"url": database_url},
                "broker": {"retry_delays": retry_delays},
            }
        )
    )


class Sharing:
    """The sharer prepared by the runner (its harness), sharing through the scripted Kheops API."""

    def __init__(self, kheops: ScriptedKheops, database_url: str, retry_delays: list[int] | None = None) -> None:
        service = KheopsSharerService(KheopsSharerSettings(), api=lambda url, settings: kheops)
        self.harness = Harness(service, _config(database_url, retry_delays or [5, 30]))
        self.publisher: RecordingPublisher = self.harness.publisher

    def handle(self, message: Message) -> Handled:
        return self.harness.deliver(message)


@pytest.fixture
def sharer(kheops: ScriptedKheops, tmp_path: Path) -> Sharing:
    return Sharing(kheops, f"sqlite:///{tmp_path / 'karnak.db'}")


@pytest.fixture
def message() -> Callable[..., Message]:
    def make(series: str = SERIES, album: int = 0, attempt: int = 0, destination: str = "kheops-main") -> Message:
        request = ShareRequest(
            destination=destination,
            album=album,
            study_instance_uid=STUDY,
            series_instance_uid=series,
            forward_node="KARNAK-GW",
        )
        headers = {**request.to_headers(), header_names.ATTEMPT: attempt}
        return Message(headers, request.to_body(), "karnak.events", "kheops.share")

    return make


def test_what_the_stow_sender_sends_is_what_the_sharer_reads() -> None:
    sent = ShareRequest(
        destination="kheops-main",
        album=2,
        study_instance_uid=STUDY,
        series_instance_uid=SERIES,
        forward_node="KARNAK-GW",
    )
    read = ShareRequest.from_body(sent.to_body())
    assert (read.destination, read.album, read.study_instance_uid, read.series_instance_uid) == (
        "kheops-main",
        2,
        STUDY,
        SERIES,
    )


def test_a_message_of_another_schema_is_refused() -> None:
    with pytest.raises(EnvelopeError, match=r"unsupported kheops\.share schema"):
        ShareRequest.from_body(json.dumps({"schema": "x/9", "destination": "d", "album": 0}).encode())


def test_a_series_is_shared_with_both_tokens_after_both_are_introspected_and_recorded(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message], records: ShareRecords
) -> None:
    assert sharer.handle(message()).settlement is Settlement.ACK
    assert kheops.calls == [("introspect", "src"), ("introspect", "dst"), ("share", STUDY, SERIES, "dst", "src")]
    assert records.shared("kheops-main", f"0:{URL_API}", SERIES)


def test_a_series_already_shared_into_the_album_is_not_shared_again(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    sharer.handle(message())
    kheops.calls.clear()
    assert sharer.handle(message()).settlement is Settlement.ACK
    assert kheops.calls == []


def test_introspection_results_are_reused_for_the_next_series(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    sharer.handle(message(series="2.25.2"))
    sharer.handle(message(series="2.25.3"))
    assert [c[0] for c in kheops.calls] == ["introspect", "introspect", "share", "share"]


def test_a_source_token_without_send_is_parked_and_reported_once_per_album(
    sharer: Sharing,
    kheops: ScriptedKheops,
    message: Callable[..., Message],
    caplog: pytest.LogCaptureFixture,
) -> None:
    kheops.tokens["src"] = Introspection(True, frozenset({"read"}))
    for series in ("2.25.2", "2.25.3", "2.25.4"):
        assert sharer.handle(message(series=series)).settlement is Settlement.ACK
    assert [c for c in kheops.calls if c[0] == "share"] == []
    parked = [c for c in sharer.publisher.calls if c.exchange == "karnak.dead"]
    assert len(parked) == 3
    assert "the source token lacks the scope(s) send (needs read, send)" in parked[0].headers[header_names.REASON]
    # Replayed, a parked share goes back to the sharer's queue (bound on the send exchange under its name).
    assert parked[0].headers[header_names.ORIGIN_EXCHANGE] == "karnak.send"
    assert parked[0].headers[header_names.ORIGIN_ROUTING_KEY] == "karnak.kheops"
    assert parked[0].headers[header_names.CAUSE] == "token-refused"
    reports = [r for r in caplog.records if r.getMessage() == "kheops.token-refused"]
    assert len(reports) == 1
    assert all("src" not in str(getattr(r, "fields", {})) for r in caplog.records)


def test_an_inactive_destination_token_is_refused() -> None:
    assert token_problem("destination", Introspection(False, frozenset({"write"})), frozenset({"write"})) == (
        "the destination token is not active (expired or revoked)"
    )
    assert token_problem("source", Introspection(False, frozenset(), 401), frozenset({"read"})) == (
        "the source token was refused by the introspection (HTTP 401)"
    )


def test_a_token_found_valid_again_is_reported_again_when_it_fails_later() -> None:
    now = [0.0]
    check = TokenCheck(10, clock=lambda: now[0])
    bad, good = Introspection(False, frozenset()), READ_SEND

    def run(source: Introspection) -> tuple[str | None, bool]:
        verdict = check.check("0:x", lambda: source, lambda: WRITE)
        return verdict.problem, verdict.first_report

    assert run(bad)[1] is True
    assert run(bad) == (run(bad)[0], False)  # cached: no new report
    now[0] = 11
    assert run(good) == (None, False)
    now[0] = 22
    assert run(bad)[1] is True


def test_kheops_unreachable_schedules_a_retry_in_the_sharers_queue(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    kheops.share_answers = [TransientDeliveryError("sharing at x answered HTTP 500")]
    assert sharer.handle(message()).settlement is Settlement.ACK
    (retry,) = sharer.publisher.calls
    assert (retry.exchange, retry.routing_key) == ("karnak.retry", "karnak.kheops")
    assert retry.headers[header_names.RETRY_TIER] == "5" and retry.headers["karnak-attempt"] == 1


def test_a_share_retried_past_the_last_tier_is_parked(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    kheops.share_answers = [TransientDeliveryError("sharing at x answered HTTP 503")]
    sharer.handle(message(attempt=2))
    (parked,) = sharer.publisher.calls
    assert parked.exchange == "karnak.dead"
    assert parked.headers[header_names.REASON] == "gave up after 3 attempts: sharing at x answered HTTP 503"


def test_a_share_kheops_forbids_is_parked_with_the_reason(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    kheops.share_answers = [PermanentDeliveryError("sharing at x answered HTTP 403")]
    sharer.handle(message())
    (parked,) = sharer.publisher.calls
    assert parked.headers[header_names.REASON] == "album 0 of kheops-main: sharing at x answered HTTP 403"


def test_a_message_for_an_album_no_longer_configured_is_parked(
    sharer: Sharing, message: Callable[..., Message]
) -> None:
    sharer.handle(message(album=5))
    assert "has no Kheops album 5" in sharer.publisher.calls[0].headers[header_names.REASON]


def test_a_database_that_cannot_be_opened_delays_the_share(
    kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    sharer = Sharing(kheops, "postgresql://nobody@127.0.0.1:1/none", retry_delays=[5])
    assert sharer.handle(message()).settlement is Settlement.ACK
    (retry,) = sharer.publisher.calls
    assert retry.exchange == "karnak.retry"
    assert kheops.calls == []


def test_a_share_recorded_twice_by_two_replicas_is_not_an_error(records: ShareRecords, tmp_path: Path) -> None:
    records.record("kheops-main", "0:u", STUDY, SERIES)
    records.record("kheops-main", "0:u", STUDY, SERIES)
    sessions = open_database(f"sqlite:///{tmp_path / 'karnak.db'}")
    with sessions() as session:
        rows = session.execute(select(KheopsShare)).scalars().all()
    assert [(r.destination, r.album, r.series_instance_uid) for r in rows] == [("kheops-main", "0:u", SERIES)]


def test_the_kheops_queue_is_declared_only_with_the_flag_and_takes_shares_and_retries() -> None:
    config = parse_config("forward_nodes: [{ae_title: GW}]\nbroker: {prefix: karnak}\n")
    plain, with_queue = RecordingChannel(), RecordingChannel()
    Topology.from_config(config).declare(plain)
    flagged = Topology.from_config(config)
    flagged = Topology(flagged.prefix, flagged.retry_delays, flagged.delivery_limit, flagged.send_queues, kheops=True)
    flagged.declare(with_queue)
    assert "karnak.kheops" not in plain.queues
    arguments: dict[str, Any] = with_queue.queues["karnak.kheops"]["arguments"]
    assert arguments["x-queue-type"] == "quorum" and arguments["x-dead-letter-exchange"] == "karnak.dead"
    assert {(b["exchange"], b["routing_key"]) for b in with_queue.bindings_of("karnak.kheops")} == {
        ("karnak.events", "kheops.share"),
        ("karnak.send", "karnak.kheops"),
    }
    assert "karnak.kheops" in flagged.all_queues()


# --- the runtime's contract, as the sharer lives it ------------------------------------------------


def test_a_message_that_is_not_a_share_request_is_parked_unread(sharer: Sharing, kheops: ScriptedKheops) -> None:
    handled = sharer.handle(Message({header_names.ATTEMPT: 0}, b"{not json", "karnak.events", "kheops.share"))
    assert handled.settlement is Settlement.ACK and handled.cause == "invalid-share-request"
    assert kheops.calls == []


def test_a_crash_while_sharing_requeues_the_message_and_parks_it_once_it_keeps_crashing(
    sharer: Sharing, kheops: ScriptedKheops, message: Callable[..., Message]
) -> None:
    kheops.share_answers = [RuntimeError("a bug"), RuntimeError("a bug")]
    first = sharer.handle(message())
    assert first.settlement is Settlement.REQUEUE and first.published == []
    again = sharer.harness.deliver(message(), delivery_count=50)  # past the runtime's crash limit
    assert again.settlement is Settlement.ACK and again.cause == "handler-crashed"
