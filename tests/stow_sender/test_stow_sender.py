"""The stow-sender's handling of a batch, with a recording publisher, a scripted server and a real blob store."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from karnak_shared import header_names
from karnak_shared.blobstore import BlobStore, DirectoryBlobStore
from karnak_shared.broker import Delivery, Settlement
from karnak_shared.config import parse_config
from karnak_shared.envelope import Envelope
from karnak_shared.errors import TransientDeliveryError
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology
from karnak_stow_sender.client import display_url
from karnak_stow_sender.response import StowResponse
from karnak_stow_sender.sender import StowSender
from tests.stow_sender.test_stow_response import _item, dicom_json
from tests.support.fixtures import RecordingPublisher, make_part10

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: archive, type: stow, url: 'https://pacs.example/dicom-web/studies'}
"""
STUDY = "1.2.826.0.1.3680043.9.7001.1"
SERIES_A, SERIES_B = "1.2.826.0.1.3680043.9.7001.1.10", "1.2.826.0.1.3680043.9.7001.1.20"
QUEUE = "karnak.send.stow.archive"


@dataclass
class ScriptedServer:
    """Stands in for `StowClient`: records each request's parts and answers from a script."""

    answers: list[StowResponse | Exception] = field(default_factory=list)
    requests: list[list[bytes]] = field(default_factory=list)
    destination_id: str = "archive"
    where: str = "archive (https://pacs.example/dicom-web/studies)"

    def post(self, parts: list[bytes]) -> StowResponse:
        self.requests.append(parts)
        answer = self.answers.pop(0) if self.answers else StowResponse(200)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def topology() -> Topology:
    return Topology.from_config(parse_config(CONFIG))


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = DirectoryBlobStore(tmp_path / "blobs")
    store.ensure()
    return store


@pytest.fixture
def sender(publisher: RecordingPublisher, topology: Topology, blobs: BlobStore) -> StowSender:
    return StowSender(publisher, topology, blobs, RetryPolicy((5, 30)))


@pytest.fixture
def send(blobs: BlobStore) -> Callable[..., Delivery]:
    """A delivery from the archive's stow queue, as the processor publishes it."""
    counter = iter(range(1, 1000))

    def make(
        number: int,
        *,
        series: str = SERIES_A,
        albums: list[int] | None = None,
        as_blob: bool = False,
        attempt: int = 0,
    ) -> Delivery:
        uid = f"{STUDY}.{number}"
        part10 = make_part10(sop_instance_uid=uid, study_instance_uid=STUDY, series_instance_uid=series)
        blob = blobs.put(part10) if as_blob else None
        envelope = Envelope(
            forward_node="KARNAK-GW",
            destination="archive",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid=uid,
            study_instance_uid=STUDY,
            series_instance_uid=series,
            transfer_syntax="1.2.840.10008.1.2.1",
            blob=blob,
            size=len(part10),
            attempt=attempt,
            kheops_albums=albums or [],
            received_at=1717171717.5,
        )
        return Delivery(QUEUE, QUEUE, next(counter), False, envelope.to_headers(), b"" if blob else part10, 1)

    return make


def uid(number: int) -> str:
    return f"{STUDY}.{number}"


def events(publisher: RecordingPublisher, kind: str) -> list[dict[str, Any]]:
    return [json.loads(c.body) for c in publisher.calls if c.routing_key == f"transfer.{kind}.archive"]


def test_a_batch_goes_in_one_request_and_every_stored_instance_is_acked_with_a_sent_event(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer()
    batch = [send(1), send(2), send(3)]
    verdicts = sender.handle_batch(batch, server)
    assert len(server.requests) == 1 and len(server.requests[0]) == 3
    assert [d.delivery_tag for d, _ in verdicts] == [d.delivery_tag for d in batch]
    assert all(v.settlement is Settlement.ACK for _, v in verdicts)
    assert [e["sop_instance_uid"] for e in events(publisher, "sent")] == [uid(1), uid(2), uid(3)]
    assert all(e["reason"] is None for e in events(publisher, "sent"))


def test_the_instance_bytes_go_out_unchanged_from_body_or_blob(
    sender: StowSender, send: Callable[..., Delivery], blobs: BlobStore
) -> None:
    server = ScriptedServer()
    inline, blob = send(1), send(2, as_blob=True)
    verdicts = sender.handle_batch([inline, blob], server)
    reference = Envelope.from_headers(blob.headers).blob
    assert reference is not None
    assert server.requests[0] == [inline.body, blobs.get(reference)]
    assert verdicts[1][1].delete_blob == reference  # deleted once its ack is on its way
    assert verdicts[0][1].delete_blob is None


def test_a_partial_failure_settles_each_instance_on_its_own(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    body = dicom_json(
        referenced=[_item(uid(1))],
        failed=[_item(uid(2), "00081197", 0xA900), _item(uid(3), "00081197", 0xA700)],
    )
    server = ScriptedServer([StowResponse(202, "application/dicom+json", body, "Accepted")])
    batch = [send(1), send(2), send(3)]
    verdicts = dict((d.delivery_tag, v) for d, v in sender.handle_batch(batch, server))
    assert all(v.settlement is Settlement.ACK for v in verdicts.values())
    parked = [c for c in publisher.calls if c.exchange == "karnak.dead"]
    assert len(parked) == 1 and parked[0].headers["karnak-sop-instance-uid"] == uid(2)
    assert "0xA900 (Data set does not match SOP Class)" in parked[0].headers[header_names.REASON]
    retried = [c for c in publisher.calls if c.exchange == "karnak.retry"]
    assert len(retried) == 1 and retried[0].headers["karnak-sop-instance-uid"] == uid(3)
    assert retried[0].routing_key == QUEUE and retried[0].headers[header_names.RETRY_TIER] == "5"
    assert retried[0].headers["karnak-attempt"] == 1
    assert [e["sop_instance_uid"] for e in events(publisher, "sent")] == [uid(1)]
    assert [e["sop_instance_uid"] for e in events(publisher, "failed")] == [uid(2)]


def test_a_503_sends_every_instance_to_the_delay_queue_with_its_attempt_counted(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer([StowResponse(503, reason_phrase="Service Unavailable")])
    verdicts = sender.handle_batch([send(1), send(2, attempt=1)], server)
    assert all(v.settlement is Settlement.ACK and v.delete_blob is None for _, v in verdicts)
    retried = [c for c in publisher.calls if c.exchange == "karnak.retry"]
    assert [(c.headers["karnak-attempt"], c.headers[header_names.RETRY_TIER]) for c in retried] == [(1, "5"), (2, "30")]
    assert events(publisher, "sent") == [] and events(publisher, "failed") == []


def test_a_network_failure_is_transient(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer([TransientDeliveryError("archive did not answer within 1 s")])
    sender.handle_batch([send(1)], server)
    assert [c.exchange for c in publisher.calls] == ["karnak.retry"]


def test_a_transient_failure_after_the_last_tier_is_parked_with_a_failed_event(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer([StowResponse(503, reason_phrase="Service Unavailable")])
    sender.handle_batch([send(1, attempt=2)], server)
    parked = [c for c in publisher.calls if c.exchange == "karnak.dead"]
    assert parked[0].headers[header_names.REASON].startswith("gave up after 3 attempts: archive (https://pacs.example")
    assert "HTTP 503 Service Unavailable" in parked[0].headers[header_names.REASON]
    assert events(publisher, "failed")[0]["reason"] == parked[0].headers[header_names.REASON]


def test_a_400_parks_the_batch_with_the_status_as_reason(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer([StowResponse(400, reason_phrase="Bad Request")])
    verdicts = sender.handle_batch([send(1), send(2)], server)
    assert all(v.settlement is Settlement.ACK for _, v in verdicts)
    parked = [c for c in publisher.calls if c.exchange == "karnak.dead"]
    assert len(parked) == 2
    assert all(p.headers[header_names.REASON].endswith("answered HTTP 400 Bad Request") for p in parked)
    assert parked[0].headers["x-karnak-origin-routing-key"] == QUEUE


def test_a_batch_too_large_for_the_server_is_sent_again_one_instance_per_request(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    server = ScriptedServer([StowResponse(413, reason_phrase="Payload Too Large")])
    verdicts = sender.handle_batch([send(1), send(2), send(3)], server)
    assert [len(r) for r in server.requests] == [3, 1, 1, 1]
    assert all(v.settlement is Settlement.ACK for _, v in verdicts)
    assert len(events(publisher, "sent")) == 3


def test_a_duplicate_delivery_in_one_batch_is_sent_once_and_settled_like_its_twin(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    first = send(1)
    twin = Delivery(QUEUE, QUEUE, 99, True, first.headers, first.body, 1)
    server = ScriptedServer()
    verdicts = sender.handle_batch([first, twin], server)
    assert len(server.requests) == 1 and len(server.requests[0]) == 1
    assert [v.settlement for _, v in verdicts] == [Settlement.ACK, Settlement.ACK]


def test_a_message_whose_blob_is_gone_was_delivered_already_and_is_acked(
    sender: StowSender, send: Callable[..., Delivery], blobs: BlobStore, publisher: RecordingPublisher
) -> None:
    gone = send(1, as_blob=True)
    reference = Envelope.from_headers(gone.headers).blob
    assert reference is not None
    blobs.delete(reference)
    server = ScriptedServer()
    verdicts = sender.handle_batch([gone, send(2)], server)
    assert [v.settlement for _, v in verdicts] == [Settlement.ACK, Settlement.ACK]
    assert len(server.requests[0]) == 1
    assert [e["sop_instance_uid"] for e in events(publisher, "sent")] == [uid(2)]


def test_a_message_without_an_envelope_is_parked_and_the_rest_is_sent(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    stray = Delivery(QUEUE, QUEUE, 50, False, {"foo": "bar"}, b"x", 1)
    verdicts = sender.handle_batch([stray, send(1)], ScriptedServer())
    assert [v.settlement for _, v in verdicts] == [Settlement.ACK, Settlement.ACK]
    parked = [c for c in publisher.calls if c.exchange == "karnak.dead"]
    assert "invalid envelope" in parked[0].headers[header_names.REASON]


def test_stored_series_with_matched_albums_ask_the_sharer_once_per_series_and_album(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    batch = [
        send(1, series=SERIES_A, albums=[0]),
        send(2, series=SERIES_A, albums=[0, 2]),
        send(3, series=SERIES_B, albums=[]),
        send(4, series=SERIES_B, albums=[1]),
    ]
    sender.handle_batch(batch, ScriptedServer())
    shares = [c for c in publisher.calls if c.routing_key == "kheops.share"]
    assert all(c.exchange == "karnak.events" and c.mandatory for c in shares)
    requested = [(json.loads(c.body)["series_instance_uid"], json.loads(c.body)["album"]) for c in shares]
    assert requested == [(SERIES_A, 0), (SERIES_A, 2), (SERIES_B, 1)]
    body = json.loads(shares[0].body)
    assert body["schema"] == "karnak.kheops-share/1"
    assert body["destination"] == "archive" and body["study_instance_uid"] == STUDY
    assert shares[0].headers["karnak-destination"] == "archive"
    # The share requests go out before the acks: an ack never precedes a confirmed share request.
    first_share = publisher.calls.index(shares[0])
    first_event = next(i for i, c in enumerate(publisher.calls) if c.routing_key.startswith("transfer.sent"))
    assert first_share < first_event


def test_no_share_is_asked_for_an_instance_that_was_not_stored(
    sender: StowSender, send: Callable[..., Delivery], publisher: RecordingPublisher
) -> None:
    sender.handle_batch([send(1, albums=[0])], ScriptedServer([StowResponse(400)]))
    assert [c for c in publisher.calls if c.routing_key == "kheops.share"] == []


def test_a_share_request_the_broker_does_not_confirm_requeues_the_series(
    topology: Topology, blobs: BlobStore, send: Callable[..., Delivery]
) -> None:
    publisher = RecordingPublisher(fail_on_call=1)
    sender = StowSender(publisher, topology, blobs, RetryPolicy((5,)))
    verdicts = sender.handle_batch([send(1, albums=[0]), send(2, albums=[0])], ScriptedServer())
    assert [v.settlement for _, v in verdicts] == [Settlement.REQUEUE, Settlement.REQUEUE]


def test_an_unconfirmed_sent_event_requeues_the_instance(
    topology: Topology, blobs: BlobStore, send: Callable[..., Delivery]
) -> None:
    publisher = RecordingPublisher(fail_on_call=2)
    sender = StowSender(publisher, topology, blobs, RetryPolicy((5,)))
    verdicts = sender.handle_batch([send(1), send(2)], ScriptedServer())
    assert [v.settlement for _, v in verdicts] == [Settlement.ACK, Settlement.REQUEUE]
    assert verdicts[1][1].delete_blob is None


def test_urls_in_reasons_and_logs_carry_neither_credentials_nor_query() -> None:
    assert display_url("https://user:pw@pacs.example:8443/dicom-web/studies?access_token=abc") == (
        "https://pacs.example:8443/dicom-web/studies"
    )
