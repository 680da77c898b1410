"""The processor's handling of one `received` delivery, with a recording publisher and a real blob store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from karnak_processor.processor import Processor
from karnak_processor.routing import Router
from karnak_shared.blobstore import BlobStore
from karnak_shared.broker import Delivery, Settlement
from karnak_shared.config import GatewayConfig, parse_config
from karnak_shared.envelope import Envelope, TransferEvent
from karnak_shared.topology import ORIGIN_EXCHANGE_HEADER, ORIGIN_ROUTING_KEY_HEADER, REASON_HEADER, Topology

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE_UID = "1.2.826.0.1.3680043.9.7001.1.1"

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
def config() -> GatewayConfig:
    return parse_config(CONFIG)


@pytest.fixture
def topology(config: GatewayConfig) -> Topology:
    return Topology.from_config(config)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    store = BlobStore(tmp_path / "blobs")
    store.ensure()
    return store


@pytest.fixture
def processor(config: GatewayConfig, publisher: Any, topology: Topology, blobs: BlobStore) -> Processor:
    return Processor(Router(config), publisher, topology, blobs, MAX_INLINE)


def received(
    body: bytes,
    *,
    blob: str | None = None,
    forward_node: str = "KARNAK-GW",
    redelivered: bool = False,
    headers: dict[str, Any] | None = None,
) -> Delivery:
    """A delivery from the `received` queue as the receiver publishes it."""
    envelope = Envelope(
        forward_node=forward_node,
        calling_ae="CT01",
        sop_class_uid=CT,
        sop_instance_uid=SOP_INSTANCE_UID,
        transfer_syntax="1.2.840.10008.1.2.1",
        blob=blob,
        size=len(body),
        received_at=1717171717.5,
    )
    return Delivery(
        queue="karnak.received",
        routing_key="karnak.received",
        delivery_tag=7,
        redelivered=redelivered,
        headers=envelope.to_headers() if headers is None else headers,
        body=b"" if blob else body,
        generation=1,
        exchange="karnak.ingest",
    )


def blob_files(blobs: BlobStore) -> set[str]:
    return {str(p.relative_to(blobs.root)) for p in blobs.root.rglob("*.dcm")}


# --- routed instances --------------------------------------------------------------------------------


def test_routed_instance_is_published_once_per_enabled_destination(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    data = part10()

    settlement = processor.handle(received(data)).settlement

    assert settlement is Settlement.ACK
    sends = [c for c in publisher.calls if c.exchange == "karnak.send"]
    assert [c.routing_key for c in sends] == ["karnak.send.dicom.pacs-a", "karnak.send.dicom.pacs-b"]
    assert all(c.body == data for c in sends)
    assert all(c.mandatory for c in sends)


def test_send_message_envelope_carries_the_destination_and_the_uids(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    delivery = received(part10())

    processor.handle(delivery)

    original = Envelope.from_headers(delivery.headers)
    sent = Envelope.from_headers(publisher.calls[0].headers)
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
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    processor.handle(received(part10()))

    (event_call,) = [c for c in publisher.calls if c.exchange == "karnak.events"]
    assert event_call.routing_key == "transfer.rejected.mr-only"
    assert event_call.mandatory is False
    event = TransferEvent.from_body(event_call.body)
    assert event.kind == "rejected"
    assert event.destination == "mr-only"
    assert event.reason == f"SOP Class {CT} is not authorized for destination mr-only"
    assert event.sop_instance_uid == SOP_INSTANCE_UID
    assert event.study_instance_uid == "1.2.826.0.1.3680043.9.7001.1"


def test_disabled_destination_gets_neither_a_message_nor_an_event(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    processor.handle(received(part10()))

    assert not [c for c in publisher.calls if "offline" in c.routing_key]


def test_large_inline_instance_is_moved_to_a_blob_per_destination(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)

    assert processor.handle(received(data)).settlement is Settlement.ACK

    sends = [c for c in publisher.calls if c.exchange == "karnak.send"]
    references = [Envelope.from_headers(c.headers).blob for c in sends]
    assert all(c.body == b"" for c in sends)
    assert None not in references and len(set(references)) == 2
    assert all(blobs.get(ref) == data for ref in references if ref)


# --- blob-borne instances ----------------------------------------------------------------------------


def test_blob_borne_instance_gets_a_hard_link_per_destination(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    original = blobs.put(data)

    assert processor.handle(received(data, blob=original)).settlement is Settlement.ACK

    sends = [c for c in publisher.calls if c.exchange == "karnak.send"]
    links = [Envelope.from_headers(c.headers).blob for c in sends]
    assert len(links) == 2 and original not in links and len(set(links)) == 2
    for link in links:
        assert link is not None
        assert blobs.path(link).stat().st_ino == blobs.path(original).stat().st_ino  # a link, not a copy
    assert all(c.body == b"" for c in sends)
    assert blob_files(blobs) == {original, *links}


def test_a_routed_message_names_its_received_blob_for_deletion_and_the_links_stay(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    original = blobs.put(data)
    delivery = received(data, blob=original)

    verdict = processor.handle(delivery)
    assert verdict.delete_blob == original
    processor.delete_blob(verdict.delete_blob)

    links = {Envelope.from_headers(c.headers).blob for c in publisher.calls if c.exchange == "karnak.send"}
    assert blob_files(blobs) == links
    assert all(blobs.get(link) == data for link in links if link)


def test_redelivered_message_whose_blob_is_gone_was_already_routed_and_is_acked(
    processor: Processor, publisher: Any, blobs: BlobStore
) -> None:
    gone = blobs.put(b"x")
    blobs.delete(gone)

    assert processor.handle(received(b"", blob=gone, redelivered=True)).settlement is Settlement.ACK
    assert publisher.calls == []


def test_redelivered_message_whose_blob_cannot_be_read_is_not_dropped(
    processor: Processor,
    publisher: Any,
    blobs: BlobStore,
    part10: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = blobs.put(part10())
    # There, but not readable as a file (reading it fails with EISDIR, as an I/O error would).
    blobs.path(original).unlink()
    blobs.path(original).mkdir()

    settlement = processor.handle(received(b"", blob=original, redelivered=True)).settlement

    assert settlement is Settlement.REQUEUE
    assert not [c for c in publisher.calls if c.exchange == "karnak.dead"]


def test_first_delivery_whose_blob_is_missing_is_parked(processor: Processor, publisher: Any, blobs: BlobStore) -> None:
    gone = blobs.put(b"x")
    blobs.delete(gone)

    assert processor.handle(received(b"", blob=gone)).settlement is Settlement.ACK

    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert gone in call.headers[REASON_HEADER]


# --- parked messages --------------------------------------------------------------------------------


def test_malformed_bytes_are_parked_with_the_reason_and_acked(processor: Processor, publisher: Any) -> None:
    delivery = received(b"this is not DICOM at all" * 10)

    settlement = processor.handle(delivery).settlement

    assert settlement is Settlement.ACK
    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert call.routing_key == "karnak.dead"
    assert call.body == delivery.body
    assert call.headers[REASON_HEADER].startswith("not a DICOM Part 10 instance")
    assert call.headers[ORIGIN_EXCHANGE_HEADER] == "karnak.ingest"
    assert call.headers[ORIGIN_ROUTING_KEY_HEADER] == "karnak.received"
    assert Envelope.from_headers(call.headers) == Envelope.from_headers(delivery.headers)


def test_instance_lacking_its_sop_instance_uid_is_parked_naming_it(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    assert processor.handle(received(part10(sop_instance_uid=None))).settlement is Settlement.ACK

    assert publisher.calls[0].headers[REASON_HEADER] == "instance lacks required attributes: SOPInstanceUID"


def test_message_without_an_envelope_is_parked(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    assert processor.handle(received(part10(), headers={"x-other": "1"})).settlement is Settlement.ACK

    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert "karnak-schema" in call.headers[REASON_HEADER]


def test_instance_for_an_unknown_forward_node_is_parked(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    assert processor.handle(received(part10(), forward_node="GONE-GW")).settlement is Settlement.ACK

    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert call.headers[REASON_HEADER] == "forward node GONE-GW is not configured"


def test_message_with_neither_body_nor_blob_is_parked(processor: Processor, publisher: Any) -> None:
    assert processor.handle(received(b"")).settlement is Settlement.ACK

    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert "neither a body nor a blob" in call.headers[REASON_HEADER]


def test_parked_blob_borne_message_keeps_its_blob_for_replay(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    original = blobs.put(data)
    delivery = received(data, blob=original, forward_node="GONE-GW")

    verdict = processor.handle(delivery)
    assert verdict.settlement is Settlement.ACK
    if verdict.delete_blob:  # what karnak_processor.main does after settling
        processor.delete_blob(verdict.delete_blob)

    assert publisher.calls[0].exchange == "karnak.dead"
    assert blobs.get(original) == data


def test_park_that_cannot_be_published_requeues(processor: Processor, publisher: Any) -> None:
    publisher.fail_on_call = 1

    assert processor.handle(received(b"not DICOM" * 20)).settlement is Settlement.REQUEUE


# --- the broker fails ---------------------------------------------------------------------------------


def test_broker_unavailable_requeues_the_delivery(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 1

    assert processor.handle(received(part10())).settlement is Settlement.REQUEUE


def test_broker_unavailable_removes_the_blob_links_it_created(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    original = blobs.put(data)
    publisher.fail_on_call = 1

    assert processor.handle(received(data, blob=original)).settlement is Settlement.REQUEUE

    assert blob_files(blobs) == {original}


def test_broker_unavailable_removes_the_blobs_of_a_large_inline_instance(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 1

    assert processor.handle(received(part10(pixel_bytes=MAX_INLINE * 2))).settlement is Settlement.REQUEUE

    assert blob_files(blobs) == set()


def test_broker_unavailable_on_the_rejected_event_requeues(
    processor: Processor, publisher: Any, part10: Callable[..., bytes]
) -> None:
    publisher.fail_on_call = 3  # pacs-a and pacs-b are confirmed, the mr-only rejection is not

    assert processor.handle(received(part10())).settlement is Settlement.REQUEUE


def test_broker_unavailable_keeps_the_links_of_messages_already_confirmed(
    processor: Processor, publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    data = part10(pixel_bytes=MAX_INLINE * 2)
    original = blobs.put(data)
    publisher.fail_on_call = 2  # pacs-a is confirmed, pacs-b is not

    assert processor.handle(received(data, blob=original)).settlement is Settlement.REQUEUE

    (confirmed,) = publisher.calls
    confirmed_blob = Envelope.from_headers(confirmed.headers).blob
    assert confirmed_blob is not None
    assert blobs.get(confirmed_blob) == data
    assert blob_files(blobs) == {original, confirmed_blob}


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
    publisher: Any, blobs: BlobStore, part10: Callable[..., bytes]
) -> None:
    config = parse_config(TRANSCODING)
    processor = Processor(Router(config), publisher, Topology.from_config(config), blobs, 1 << 20)

    settlement = processor.handle(received(part10(pixel_bytes=4096))).settlement  # 16 bits stored

    assert settlement is Settlement.ACK
    sent = {Envelope.from_headers(c.headers).destination: c for c in publisher.calls if c.exchange == "karnak.send"}
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
