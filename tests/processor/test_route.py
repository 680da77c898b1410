"""The processor's handling of one `received` message, through the runtime's testing kit (no broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from karnak_processor.processor import ProcessorService, Routes
from karnak_shared import header_names
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Settlement
from karnak_shared.config import parse_config
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.service.testing import Harness, Message, RecordingPublisher, instance_message

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE_UID = "1.2.826.0.1.3680043.9.7001.1.1"
KEY = "ab" * 32

CONFIG = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: pacs-a, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104}
      - {id: offline, type: dicom, ae_title: OFFLINE, hostname: offline.example, port: 104, enabled: false}
      - {id: pacs-b, type: dicom, ae_title: PACSB, hostname: pacsb.example, port: 104}
      - id: mr-only
        type: dicom
        ae_title: MR
        hostname: mr.example
        port: 104
        authorized_sop_classes: ['1.2.840.10008.5.1.4.1.1.4']
"""
MAX_INLINE = 4096


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def harness(tmp_path: Path, publisher: RecordingPublisher) -> Harness[Routes]:
    config = parse_config(
        CONFIG
        + f"blob_store: {{path: '{tmp_path / 'blobs'}', max_inline_bytes: {MAX_INLINE}}}\n"
        + f"secrets: {{key: '{KEY}'}}\n"
    )
    return Harness(ProcessorService(), config, publisher)


@pytest.fixture
def blobs(harness: Harness[Routes]) -> BlobStore:
    return harness.blobs


def received(harness: Harness[Routes], body: bytes, *, as_blob: bool = False, **fields: object) -> Message:
    """A message of the `received` queue as the receiver publishes it (signed)."""
    return instance_message(body, signer=harness.signer, blobs=harness.blobs if as_blob else None, **fields)


def blob_files(blobs: BlobStore) -> set[str]:
    return {str(p.relative_to(blobs.root)) for p in blobs.root.rglob("*.dcm")}


def sends(publisher: RecordingPublisher) -> list[Envelope]:
    return [Envelope.from_headers(c.headers) for c in publisher.to("karnak.send")]


# --- routed instances --------------------------------------------------------------------------------


def test_routed_instance_is_published_once_per_enabled_destination(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    data = part10()

    assert harness.deliver(received(harness, data)).settlement is Settlement.ACK

    calls = publisher.to("karnak.send")
    assert [c.routing_key for c in calls] == ["karnak.send.dicom.pacs-a", "karnak.send.dicom.pacs-b"]
    assert all(c.body == data for c in calls)
    assert all(c.mandatory for c in calls)


def test_every_message_the_processor_publishes_is_signed(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    harness.deliver(received(harness, part10()))

    assert publisher.calls
    assert all(harness.signer.check(c.headers, c.body) for c in publisher.calls)


def test_send_message_envelope_carries_the_destination_and_the_uids(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    message = received(harness, part10())

    harness.deliver(message)

    original = Envelope.from_headers(message.headers)
    sent = sends(publisher)[0]
    assert sent.destination == "pacs-a"
    assert sent.instance_id == original.instance_id
    assert sent.forward_node == "KARNAK-GW"
    assert sent.sop_class_uid == CT
    assert sent.sop_instance_uid == SOP_INSTANCE_UID
    assert sent.study_instance_uid == "1.2.826.0.1.3680043.9.7001.1"
    assert sent.series_instance_uid == "1.2.826.0.1.3680043.9.7001.1.0"
    assert sent.attempt == 0
    assert sent.blob is None
    assert sent.received_at == 1717171717.5
    assert sent.display["StudyDescription"] == "RESEARCH CT"


def test_rejected_instance_publishes_a_rejected_event_without_mandatory(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    harness.deliver(received(harness, part10()))

    (event_call,) = publisher.to("karnak.events")
    assert event_call.routing_key == "transfer.rejected.mr-only"
    assert event_call.mandatory is False
    event = TransferEvent.from_body(event_call.body)
    assert event.kind == "rejected"
    assert event.destination == "mr-only"
    assert event.reason == f"SOP Class {CT} is not authorized for destination mr-only"
    assert event.sop_instance_uid == SOP_INSTANCE_UID
    assert event.study_instance_uid == "1.2.826.0.1.3680043.9.7001.1"


def test_disabled_destination_gets_neither_a_message_nor_an_event(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    harness.deliver(received(harness, part10()))

    assert not [c for c in publisher.calls if "offline" in c.routing_key]


def test_large_inline_instance_is_moved_to_a_blob_per_destination_with_its_digest(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)

    assert harness.deliver(received(harness, data)).settlement is Settlement.ACK

    assert all(c.body == b"" for c in publisher.to("karnak.send"))
    references = [e.blob for e in sends(publisher)]
    assert None not in references and len(set(references)) == 2
    assert all(blobs.get(ref) == data for ref in references if ref)
    assert len({e.digest for e in sends(publisher)} - {None}) == 1


# --- blob-borne instances ----------------------------------------------------------------------------


def test_blob_borne_instance_gets_a_hard_link_per_destination_and_its_own_blob_goes_after_the_ack(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    message = received(harness, data, as_blob=True)
    original = Envelope.from_headers(message.headers).blob
    assert original is not None
    inode = blobs.path(original).stat().st_ino

    handled = harness.deliver(message)

    assert handled.settlement is Settlement.ACK
    links = [e.blob for e in sends(publisher)]
    assert len(links) == 2 and original not in links and len(set(links)) == 2
    for link in links:
        assert link is not None
        assert blobs.path(link).stat().st_ino == inode  # a link, not a copy
    assert handled.deleted_blob == original
    assert blob_files(blobs) == set(links)
    assert all(blobs.get(link) == data for link in links if link)


def test_message_whose_blob_is_missing_is_parked_missing_blob_even_when_redelivered(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    message = received(harness, part10(pixel_bytes=MAX_INLINE * 2), as_blob=True)
    gone = Envelope.from_headers(message.headers).blob
    assert gone is not None
    harness.blobs.delete(gone)

    handled = harness.deliver(message, delivery_count=1)

    assert handled.settlement is Settlement.ACK
    assert handled.cause == "missing-blob"
    (call,) = publisher.calls
    assert gone in call.headers[header_names.REASON]


def test_a_redelivery_whose_ack_was_lost_is_acked_as_done_not_parked_missing_blob(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    # An ack is not confirmed by RabbitMQ: one lost with its connection brings the message back after
    # its blob was deleted. The process that acked it knows, and acks it again instead of parking it.
    message = received(harness, part10(pixel_bytes=MAX_INLINE * 2), as_blob=True)
    first = harness.deliver(message)
    assert first.settlement is Settlement.ACK and first.deleted_blob is not None
    routed = len(publisher.calls)

    again = harness.deliver(message, delivery_count=1)

    assert again.settlement is Settlement.ACK
    assert again.cause is None  # not parked
    assert len(publisher.calls) == routed  # nothing published again: neither copies nor a park


def test_message_whose_blob_cannot_be_read_is_requeued_not_parked(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    message = received(harness, part10(), as_blob=True)
    reference = Envelope.from_headers(message.headers).blob
    assert reference is not None
    # There, but not readable as a file (reading it fails with EISDIR, as an I/O error would).
    harness.blobs.path(reference).unlink()
    harness.blobs.path(reference).mkdir()

    assert harness.deliver(message).settlement is Settlement.REQUEUE
    assert not publisher.to("karnak.dead")


# --- parked messages --------------------------------------------------------------------------------


def test_bytes_that_are_not_dicom_are_parked_with_the_cause_and_where_they_came_from(
    harness: Harness[Routes], publisher: RecordingPublisher
) -> None:
    message = received(harness, b"this is not DICOM at all" * 10)

    handled = harness.deliver(message)

    assert handled.settlement is Settlement.ACK
    assert handled.cause == "not-dicom"
    (call,) = publisher.calls
    assert (call.exchange, call.routing_key, call.body) == ("karnak.dead", "karnak.dead", message.body)
    assert call.headers[header_names.ORIGIN_EXCHANGE] == "karnak.ingest"
    assert call.headers[header_names.ORIGIN_ROUTING_KEY] == "karnak.received"
    assert Envelope.from_headers(call.headers) == Envelope.from_headers(message.headers)
    # Parked as it came: its signature still holds for a replay.
    assert harness.signer.check(call.headers, call.body)


def test_truncated_dicom_is_parked_invalid_instance_at_once(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    handled = harness.deliver(received(harness, part10(pixel_bytes=2000)[:-700]))

    assert handled.cause == "invalid-instance"
    assert len(publisher.calls) == 1


def test_instance_lacking_its_sop_instance_uid_is_parked_naming_it(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    handled = harness.deliver(received(harness, part10(sop_instance_uid=None)))

    assert handled.cause == "invalid-instance"
    assert (
        publisher.calls[0].headers[header_names.REASON].endswith("instance lacks required attributes: SOPInstanceUID")
    )


def test_message_without_an_envelope_is_parked(harness: Harness[Routes], publisher: RecordingPublisher) -> None:
    message = Message(harness.signer.sign({"karnak-other": "1"}, b"x"), b"x")

    handled = harness.deliver(message)

    assert handled.cause == "invalid-envelope"
    assert "karnak-schema" in publisher.calls[0].headers[header_names.REASON]


def test_instance_for_an_unknown_forward_node_is_parked(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    handled = harness.deliver(received(harness, part10(), forward_node="GONE-GW"))

    assert handled.cause == "unknown-forward-node"
    assert publisher.calls[0].headers[header_names.REASON] == "forward node GONE-GW is not configured"


def test_message_with_neither_body_nor_blob_is_parked(harness: Harness[Routes], publisher: RecordingPublisher) -> None:
    handled = harness.deliver(received(harness, b""))

    assert handled.cause == "invalid-instance"
    assert "neither a body nor a blob" in publisher.calls[0].headers[header_names.REASON]


def test_parked_blob_borne_message_keeps_its_blob_for_replay(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    message = received(harness, data, as_blob=True, forward_node="GONE-GW")

    handled = harness.deliver(message)

    assert handled.cause == "unknown-forward-node"
    assert handled.deleted_blob is None
    assert blobs.get(str(Envelope.from_headers(message.headers).blob)) == data


def test_park_that_cannot_be_published_requeues(harness: Harness[Routes], publisher: RecordingPublisher) -> None:
    publisher.fail_on_call = 1

    assert harness.deliver(received(harness, b"not DICOM" * 20)).settlement is Settlement.REQUEUE


# --- the broker fails ---------------------------------------------------------------------------------


def test_broker_unavailable_requeues_the_delivery(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 1

    assert harness.deliver(received(harness, part10())).settlement is Settlement.REQUEUE


def test_broker_unavailable_removes_the_blob_links_it_created_and_keeps_the_received_blob(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    message = received(harness, part10(pixel_bytes=MAX_INLINE * 2), as_blob=True)
    original = str(Envelope.from_headers(message.headers).blob)
    publisher.fail_on_call = 1

    assert harness.deliver(message).settlement is Settlement.REQUEUE

    assert blob_files(blobs) == {original}


def test_broker_unavailable_removes_the_blobs_of_a_large_inline_instance(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 1

    assert harness.deliver(received(harness, part10(pixel_bytes=MAX_INLINE * 2))).settlement is Settlement.REQUEUE

    assert blob_files(blobs) == set()


def test_broker_unavailable_on_the_rejected_event_requeues(
    harness: Harness[Routes], publisher: RecordingPublisher, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 3  # pacs-a and pacs-b are confirmed, the mr-only rejection is not

    assert harness.deliver(received(harness, part10())).settlement is Settlement.REQUEUE


def test_broker_unavailable_keeps_the_links_of_messages_already_confirmed(
    harness: Harness[Routes], publisher: RecordingPublisher, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    message = received(harness, data, as_blob=True)
    publisher.fail_on_call = 2  # pacs-a is confirmed, pacs-b is not

    assert harness.deliver(message).settlement is Settlement.REQUEUE

    (confirmed,) = publisher.calls
    confirmed_blob = Envelope.from_headers(confirmed.headers).blob
    assert confirmed_blob is not None
    assert blobs.get(confirmed_blob) == data


# --- transfer syntaxes ---------------------------------------------------------------------------------

TRANSCODING = """\
forward_nodes:
  - ae_title: KARNAK-GW
    destinations:
      - {id: baseline, type: dicom, ae_title: PACS, hostname: pacs.example, port: 104,
         transfer_syntax: 1.2.840.10008.1.2.4.50}
      - {id: lossless, type: dicom, ae_title: PACSB, hostname: pacsb.example, port: 104,
         transfer_syntax: 1.2.840.10008.1.2.4.57}
"""


def test_a_destination_whose_syntax_cannot_carry_the_pixels_gets_them_uncompressed_and_told_why(
    tmp_path: Path, part10: Callable[..., bytes]
) -> None:
    config = parse_config(TRANSCODING + f"blob_store: {{path: '{tmp_path / 'blobs'}', max_inline_bytes: 1048576}}\n")
    harness = Harness(ProcessorService(), config)

    handled = harness.deliver(received(harness, part10(pixel_bytes=4096)))  # 16 bits stored

    assert handled.settlement is Settlement.ACK
    sent = {Envelope.from_headers(c.headers).destination: c for c in harness.publisher.to("karnak.send")}
    baseline, lossless = (Envelope.from_headers(sent[d].headers) for d in ("baseline", "lossless"))
    assert baseline.transfer_syntax == "1.2.840.10008.1.2.1"
    assert baseline.syntax_fallback is not None
    assert "JPEG Baseline (Process 1) carries 8-bit samples only, not 16 of 16 bits" in baseline.syntax_fallback
    assert baseline.syntax_fallback.endswith("sent in Explicit VR Little Endian instead")
    assert b"\x00\x01\x02\x03" in sent["baseline"].body  # the 16-bit pixels, whole
    assert lossless.transfer_syntax == "1.2.840.10008.1.2.4.57"
    assert lossless.syntax_fallback is None
    event = TransferEvent.for_envelope(baseline, "sent", "baseline", None)
    assert event.syntax_fallback == baseline.syntax_fallback  # what the dicom-sender's sent event carries
