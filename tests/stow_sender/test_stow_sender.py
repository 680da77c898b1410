"""The stow-sender's handling of a batch, through the runtime's testing kit: a scripted server, no broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from karnak_shared import header_names
from karnak_shared.broker import Settlement
from karnak_shared.config import StowDestination, parse_config
from karnak_shared.envelope import Envelope, TransferOrigin
from karnak_shared.errors import TransientDeliveryError
from karnak_shared.service.testing import Handled, Harness, Message, RecordingPublisher, instance_message
from karnak_stow_sender.client import display_url
from karnak_stow_sender.response import StowResponse
from karnak_stow_sender.sender import Destinations, StowSenderService
from karnak_stow_sender.settings import StowSenderSettings
from tests.stow_sender.test_stow_response import _item, dicom_json
from tests.support.fixtures import make_part10

KEY = "ef" * 32
STUDY = "1.2.826.0.1.3680043.9.7001.1"
SERIES_A, SERIES_B = "1.2.826.0.1.3680043.9.7001.1.10", "1.2.826.0.1.3680043.9.7001.1.20"
QUEUE = "karnak.send.stow.archive"
ORIGIN = TransferOrigin(
    study_instance_uid="2.25.1001", series_instance_uid="2.25.1002", modality="CT", deidentified=True
)


@dataclass
class ScriptedServer:
    """Stands in for `StowClient`: records each request's parts and answers from a script."""

    answers: list[StowResponse | Exception] = field(default_factory=list)
    requests: list[list[bytes]] = field(default_factory=list)
    destination_id: str = "archive"
    where: str = "archive (https://pacs.example/dicom-web/studies)"
    closed: bool = False

    def post(self, parts: list[bytes]) -> StowResponse:
        self.requests.append(parts)
        answer = self.answers.pop(0) if self.answers else StowResponse(200)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
def start(tmp_path: Path, server: ScriptedServer) -> Callable[..., Harness[Destinations]]:
    def make(publisher: RecordingPublisher | None = None, delays: tuple[int, ...] = (5, 30)) -> Harness[Destinations]:
        config = parse_config(
            "forward_nodes:\n  - ae_title: KARNAK-GW\n    destinations:\n"
            "      - {id: archive, type: stow, url: 'https://pacs.example/dicom-web/studies'}\n"
            f"blob_store: {{path: '{tmp_path / 'blobs'}', max_inline_bytes: 4096}}\n"
            f"secrets: {{key: '{KEY}'}}\n"
            f"broker: {{retry_delays: {list(delays)}}}\n"
        )

        def transport(destination: StowDestination, settings: StowSenderSettings) -> ScriptedServer:
            return server

        service = StowSenderService(StowSenderSettings(concurrency=1), transport)
        return Harness(service, config, publisher)

    return make


@pytest.fixture
def harness(start: Callable[..., Harness[Destinations]]) -> Harness[Destinations]:
    return start()


def uid(number: int) -> str:
    return f"{STUDY}.{number}"


def send(
    harness: Harness[Destinations],
    number: int,
    *,
    series: str = SERIES_A,
    albums: list[int] | None = None,
    as_blob: bool = False,
    attempt: int = 0,
) -> Message:
    """A message of the archive's stow queue, as the processor publishes it (signed)."""
    part10 = make_part10(sop_instance_uid=uid(number), study_instance_uid=STUDY, series_instance_uid=series)
    return instance_message(
        part10,
        signer=harness.signer,
        blobs=harness.blobs if as_blob else None,
        destination="archive",
        sop_instance_uid=uid(number),
        study_instance_uid=STUDY,
        series_instance_uid=series,
        attempt=attempt,
        kheops_albums=albums or [],
        origin=ORIGIN,
    )


def events(publisher: RecordingPublisher, kind: str) -> list[dict[str, Any]]:
    return [json.loads(c.body) for c in publisher.calls if c.routing_key == f"transfer.{kind}.archive"]


def settlements(handled: list[Handled]) -> list[Settlement | None]:
    return [h.settlement for h in handled]


def test_a_batch_goes_in_one_request_and_every_stored_instance_is_acked_with_a_sent_event(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2), send(harness, 3)])
    assert len(server.requests) == 1 and len(server.requests[0]) == 3
    assert settlements(handled) == [Settlement.ACK] * 3
    sent = events(harness.publisher, "sent")
    assert [e["sop_instance_uid"] for e in sent] == [uid(1), uid(2), uid(3)]
    assert all(e["reason"] is None for e in sent)
    # The origin the processor filled travels on into the event (DESIGN.md section 16).
    assert all(TransferOrigin.model_validate(e["origin"]) == ORIGIN for e in sent)


def test_the_instance_bytes_go_out_unchanged_from_body_or_blob_and_the_blob_goes_after_the_ack(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    inline, blob = send(harness, 1), send(harness, 2, as_blob=True)
    reference = Envelope.from_headers(blob.headers).blob
    assert reference is not None
    data = harness.blobs.get(reference)
    handled = harness.deliver_batch([inline, blob])
    assert server.requests[0] == [inline.body, data]
    assert handled[1].deleted_blob == reference
    assert handled[0].deleted_blob is None


def test_a_partial_failure_settles_each_instance_on_its_own(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    body = dicom_json(
        referenced=[_item(uid(1))],
        failed=[_item(uid(2), "00081197", 0xA900), _item(uid(3), "00081197", 0xA700)],
    )
    server.answers.append(StowResponse(202, "application/dicom+json", body, "Accepted"))
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2), send(harness, 3)])
    assert settlements(handled) == [Settlement.ACK] * 3
    parked = harness.publisher.to("karnak.dead")
    assert len(parked) == 1 and parked[0].headers["karnak-sop-instance-uid"] == uid(2)
    assert "0xA900 (Data set does not match SOP Class)" in parked[0].headers[header_names.REASON]
    retried = harness.publisher.to("karnak.retry")
    assert len(retried) == 1 and retried[0].headers["karnak-sop-instance-uid"] == uid(3)
    assert retried[0].routing_key == QUEUE and retried[0].headers[header_names.RETRY_TIER] == "5"
    assert retried[0].headers["karnak-attempt"] == 1
    assert [e["sop_instance_uid"] for e in events(harness.publisher, "sent")] == [uid(1)]
    assert [e["sop_instance_uid"] for e in events(harness.publisher, "failed")] == [uid(2)]
    assert [e["sop_instance_uid"] for e in events(harness.publisher, "retried")] == [uid(3)]


def test_a_503_sends_every_instance_to_the_delay_queue_with_a_retried_event_and_its_attempt_counted(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(503, reason_phrase="Service Unavailable"))
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2, attempt=1)])
    assert settlements(handled) == [Settlement.ACK] * 2
    assert [h.deleted_blob for h in handled] == [None, None]
    retried = harness.publisher.to("karnak.retry")
    assert [(c.headers["karnak-attempt"], c.headers[header_names.RETRY_TIER]) for c in retried] == [(1, "5"), (2, "30")]
    reasons = [e["reason"] for e in events(harness.publisher, "retried")]
    assert reasons == [f"{server.where} answered HTTP 503 Service Unavailable"] * 2
    assert [e["attempt"] for e in events(harness.publisher, "retried")] == [0, 1]
    assert events(harness.publisher, "sent") == [] and events(harness.publisher, "failed") == []


def test_a_network_failure_is_transient(harness: Harness[Destinations], server: ScriptedServer) -> None:
    server.answers.append(TransientDeliveryError("archive did not answer within 1 s"))
    harness.deliver(send(harness, 1))
    assert [c.exchange for c in harness.publisher.calls] == ["karnak.events", "karnak.retry"]
    assert events(harness.publisher, "retried")[0]["reason"] == "archive did not answer within 1 s"


def test_a_transient_failure_after_the_last_tier_is_parked_with_a_failed_event_and_no_retried_one(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(503, reason_phrase="Service Unavailable"))
    harness.deliver(send(harness, 1, attempt=2))
    (parked,) = harness.publisher.to("karnak.dead")
    assert parked.headers[header_names.REASON].startswith("gave up after 3 attempts: archive (https://pacs.example")
    assert "HTTP 503 Service Unavailable" in parked.headers[header_names.REASON]
    assert parked.headers[header_names.CAUSE] == "retries-exhausted"
    assert events(harness.publisher, "failed")[0]["reason"] == parked.headers[header_names.REASON]
    assert events(harness.publisher, "retried") == []


def test_a_400_parks_the_batch_with_the_status_as_reason(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(400, reason_phrase="Bad Request"))
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2)])
    assert settlements(handled) == [Settlement.ACK] * 2
    parked = harness.publisher.to("karnak.dead")
    assert len(parked) == 2
    assert all(p.headers[header_names.REASON].endswith("answered HTTP 400 Bad Request") for p in parked)
    assert parked[0].headers[header_names.ORIGIN_ROUTING_KEY] == QUEUE


def test_a_409_is_a_duplicate_acked_with_a_duplicate_event_and_neither_sent_nor_failed(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(409, reason_phrase="Conflict"))
    handled = harness.deliver_batch([send(harness, 1, as_blob=True), send(harness, 2)])
    assert settlements(handled) == [Settlement.ACK] * 2
    assert handled[0].deleted_blob is not None  # done with: its blob goes
    duplicates = events(harness.publisher, "duplicate")
    assert [e["sop_instance_uid"] for e in duplicates] == [uid(1), uid(2)]
    assert duplicates[0]["reason"] == f"{server.where} answered HTTP 409 Conflict"
    assert events(harness.publisher, "sent") == [] and events(harness.publisher, "failed") == []
    assert harness.publisher.to("karnak.dead") == []


def test_a_batch_too_large_for_the_server_is_sent_again_one_instance_per_request(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(413, reason_phrase="Payload Too Large"))
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2), send(harness, 3)])
    assert [len(r) for r in server.requests] == [3, 1, 1, 1]
    assert settlements(handled) == [Settlement.ACK] * 3
    assert len(events(harness.publisher, "sent")) == 3


def test_a_duplicate_delivery_in_one_batch_is_sent_once_and_settled_like_its_twin(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    first = send(harness, 1)
    handled = harness.deliver_batch([first, first])
    assert len(server.requests) == 1 and len(server.requests[0]) == 1
    assert settlements(handled) == [Settlement.ACK, Settlement.ACK]


def test_a_message_whose_blob_is_gone_is_parked_before_the_request_and_the_rest_is_sent(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    gone = send(harness, 1, as_blob=True)
    reference = Envelope.from_headers(gone.headers).blob
    assert reference is not None
    harness.blobs.delete(reference)
    handled = harness.deliver_batch([gone, send(harness, 2)])
    assert settlements(handled) == [Settlement.ACK, Settlement.ACK]
    assert len(server.requests[0]) == 1
    assert [e["sop_instance_uid"] for e in events(harness.publisher, "sent")] == [uid(2)]
    (parked,) = harness.publisher.to("karnak.dead")
    assert parked.headers[header_names.CAUSE] == "missing-blob"


def test_a_message_without_an_envelope_is_parked_unread_and_the_rest_is_sent(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    stray = Message(harness.signer.sign({"foo": "bar"}, b"x"), b"x")
    handled = harness.deliver_batch([stray, send(harness, 1)])
    assert settlements(handled) == [Settlement.ACK, Settlement.ACK]
    (parked,) = harness.publisher.to("karnak.dead")
    assert parked.headers[header_names.CAUSE] == "invalid-envelope"
    assert len(server.requests) == 1 and len(server.requests[0]) == 1


def test_an_unsigned_message_is_parked_and_never_reaches_the_server(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    part10 = make_part10(sop_instance_uid=uid(1), study_instance_uid=STUDY)
    forged = instance_message(part10, destination="archive", sop_instance_uid=uid(1), study_instance_uid=STUDY)
    (handled,) = harness.deliver_batch([forged])
    assert handled.settlement is Settlement.ACK and handled.cause == "unauthenticated"
    assert server.requests == []


def test_stored_series_with_matched_albums_ask_the_sharer_once_per_series_and_album(
    harness: Harness[Destinations],
) -> None:
    batch = [
        send(harness, 1, series=SERIES_A, albums=[0]),
        send(harness, 2, series=SERIES_A, albums=[0, 2]),
        send(harness, 3, series=SERIES_B, albums=[]),
        send(harness, 4, series=SERIES_B, albums=[1]),
    ]
    harness.deliver_batch(batch)
    calls = harness.publisher.calls
    shares = [c for c in calls if c.routing_key == "kheops.share"]
    assert all(c.exchange == "karnak.events" and c.mandatory for c in shares)
    requested = [(json.loads(c.body)["series_instance_uid"], json.loads(c.body)["album"]) for c in shares]
    assert requested == [(SERIES_A, 0), (SERIES_A, 2), (SERIES_B, 1)]
    body = json.loads(shares[0].body)
    assert body["schema"] == "karnak.kheops-share/1"
    assert body["destination"] == "archive" and body["study_instance_uid"] == STUDY
    assert shares[0].headers["karnak-destination"] == "archive"
    assert harness.signer.check(shares[0].headers, shares[0].body), "the sharer parks unsigned share requests"
    # The share requests go out before the events; the runner acks after every publish is confirmed.
    first_share = calls.index(shares[0])
    first_event = next(i for i, c in enumerate(calls) if c.routing_key.startswith("transfer.sent"))
    assert first_share < first_event


def test_no_share_is_asked_for_an_instance_that_was_not_stored(
    harness: Harness[Destinations], server: ScriptedServer
) -> None:
    server.answers.append(StowResponse(400))
    harness.deliver(send(harness, 1, albums=[0]))
    assert [c for c in harness.publisher.calls if c.routing_key == "kheops.share"] == []


def test_a_share_request_the_broker_does_not_confirm_requeues_the_batch(
    start: Callable[..., Harness[Destinations]],
) -> None:
    harness = start(RecordingPublisher(fail_on_call=1))
    handled = harness.deliver_batch([send(harness, 1, albums=[0]), send(harness, 2, albums=[0])])
    assert settlements(handled) == [Settlement.REQUEUE, Settlement.REQUEUE]


def test_an_unconfirmed_sent_event_requeues_the_batch_and_keeps_the_blobs(
    start: Callable[..., Harness[Destinations]],
) -> None:
    harness = start(RecordingPublisher(fail_on_call=2))
    handled = harness.deliver_batch([send(harness, 1, as_blob=True), send(harness, 2, as_blob=True)])
    # Sending the instances again is harmless; acking one whose event RabbitMQ refused is not.
    assert settlements(handled) == [Settlement.REQUEUE, Settlement.REQUEUE]
    assert [h.deleted_blob for h in handled] == [None, None]
    assert len(list(harness.blobs.root.rglob("*.dcm"))) == 2


def test_a_handler_exception_requeues_the_batch(harness: Harness[Destinations], server: ScriptedServer) -> None:
    server.answers.append(RuntimeError("a bug"))
    handled = harness.deliver_batch([send(harness, 1), send(harness, 2)])
    assert settlements(handled) == [Settlement.REQUEUE, Settlement.REQUEUE]
    assert harness.publisher.calls == []


def test_a_replaced_configuration_closes_its_clients(harness: Harness[Destinations], server: ScriptedServer) -> None:
    harness.runner.service.release(harness.state)
    assert server.closed


def test_urls_in_reasons_and_logs_carry_neither_credentials_nor_query() -> None:
    assert display_url("https://user:pw@pacs.example:8443/dicom-web/studies?access_token=abc") == (
        "https://pacs.example:8443/dicom-web/studies"
    )
