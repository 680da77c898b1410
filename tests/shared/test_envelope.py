"""The message envelope (AMQP headers) and transfer events: round trips and what makes them invalid."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest

from karnak_shared.envelope import ENVELOPE_SCHEMA, EVENT_SCHEMA, Envelope, TransferEvent
from karnak_shared.errors import EnvelopeError

DISPLAY = {"PatientID": "PAT-0042", "StudyDescription": "Tête Thorax", "StudyDate": "20240102"}


@pytest.fixture
def envelope() -> Envelope:
    return Envelope(
        forward_node="KARNAK-GW",
        calling_ae="CT01",
        destination="research-pacs",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.826.0.1.3680043.9.7001.1.1",
        transfer_syntax="1.2.840.10008.1.2.1",
        study_instance_uid="1.2.826.0.1.3680043.9.7001.1",
        series_instance_uid="1.2.826.0.1.3680043.9.7001.1.0",
        attempt=2,
        blob="ab/" + "ab" * 16 + ".dcm",
        size=524288,
        received_at=1717171717.123456,
        kheops_albums=[3, 17],
        display=DISPLAY,
    )


def as_pika_bytes(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers as pika may deliver them: text values as bytes (AMQP long strings)."""
    return {k: v.encode("utf-8") if isinstance(v, str) else v for k, v in headers.items()}


def test_headers_round_trip_to_an_equal_envelope(envelope: Envelope) -> None:
    assert Envelope.from_headers(envelope.to_headers()) == envelope


def test_headers_delivered_as_bytes_round_trip_too(envelope: Envelope) -> None:
    assert Envelope.from_headers(as_pika_bytes(envelope.to_headers())) == envelope


def test_a_syntax_fallback_travels_as_a_header_and_into_the_events_of_the_message(envelope: Envelope) -> None:
    note = "JPEG Baseline (Process 1) carries 8-bit samples only: sent in Explicit VR Little Endian instead"
    fallen_back = envelope.model_copy(update={"syntax_fallback": note})

    headers = as_pika_bytes(fallen_back.to_headers())

    assert headers["karnak-syntax-fallback"] == note.encode()
    event = TransferEvent.for_envelope(Envelope.from_headers(headers), "sent", "research-pacs", None)
    assert TransferEvent.from_body(event.to_body()).syntax_fallback == note
    assert TransferEvent.for_envelope(envelope, "sent", "research-pacs", None).syntax_fallback is None


def test_received_at_keeps_its_fraction_of_a_second(envelope: Envelope) -> None:
    headers = envelope.to_headers()

    assert isinstance(headers["karnak-received-at"], str)  # AMQP tables have no portable float
    assert Envelope.from_headers(headers).received_at == 1717171717.123456
    assert Envelope.from_headers(as_pika_bytes(headers)).received_at == 1717171717.123456


def test_display_and_kheops_albums_travel_as_json(envelope: Envelope) -> None:
    headers = envelope.to_headers()

    assert json.loads(headers["karnak-display"]) == DISPLAY
    assert json.loads(headers["karnak-kheops-albums"]) == [3, 17]
    restored = Envelope.from_headers(as_pika_bytes(headers))
    assert restored.display == DISPLAY
    assert restored.kheops_albums == [3, 17]


def test_headers_are_prefixed_and_carry_the_schema(envelope: Envelope) -> None:
    headers = envelope.to_headers()

    assert headers["karnak-schema"] == ENVELOPE_SCHEMA
    assert headers["karnak-destination"] == "research-pacs"
    assert headers["karnak-attempt"] == 2
    assert all(key.startswith("karnak-") for key in headers)


def test_unset_and_empty_fields_are_left_out_of_the_headers() -> None:
    minimal = Envelope(
        forward_node="KARNAK-GW",
        sop_class_uid="1.2.3",
        sop_instance_uid="1.2.3.4",
        transfer_syntax="1.2.840.10008.1.2",
    )

    headers = minimal.to_headers()

    assert "karnak-blob" not in headers
    assert "karnak-destination" not in headers
    assert "karnak-display" not in headers
    assert "karnak-kheops-albums" not in headers
    assert Envelope.from_headers(headers) == minimal


def test_other_headers_are_ignored(envelope: Envelope) -> None:
    headers = {
        **envelope.to_headers(),
        "x-retry-tier": "30",
        "x-death": [{"count": 1}],
        "karnak-future-field": "x",
    }

    assert Envelope.from_headers(headers) == envelope


def test_each_envelope_gets_its_own_instance_id() -> None:
    fields = {
        "forward_node": "GW",
        "sop_class_uid": "1.2",
        "sop_instance_uid": "1.2.3",
        "transfer_syntax": "1.2.4",
    }

    assert Envelope(**fields).instance_id != Envelope(**fields).instance_id


@pytest.mark.parametrize("headers", [None, {}, {"x-death": []}])
def test_missing_schema_is_not_a_gateway_message(headers: dict[str, Any] | None) -> None:
    with pytest.raises(EnvelopeError, match="no karnak-schema header"):
        Envelope.from_headers(headers)


def test_wrong_schema_version_is_refused_naming_both_versions(envelope: Envelope) -> None:
    headers = {**envelope.to_headers(), "karnak-schema": b"karnak.instance/2"}

    with pytest.raises(EnvelopeError) as caught:
        Envelope.from_headers(headers)

    assert "karnak.instance/2" in str(caught.value)
    assert ENVELOPE_SCHEMA in str(caught.value)


def test_invalid_field_value_names_the_field(envelope: Envelope) -> None:
    headers = {**envelope.to_headers(), "karnak-attempt": "third"}

    with pytest.raises(EnvelopeError, match=r"invalid envelope: attempt"):
        Envelope.from_headers(headers)


def test_missing_required_field_names_the_field(envelope: Envelope) -> None:
    headers = envelope.to_headers()
    del headers["karnak-sop-instance-uid"]

    with pytest.raises(EnvelopeError, match=r"invalid envelope: sop_instance_uid"):
        Envelope.from_headers(headers)


def test_display_header_that_is_not_json_is_an_envelope_error(envelope: Envelope) -> None:
    headers = {**envelope.to_headers(), "karnak-display": "{PatientID: oops"}

    with pytest.raises(EnvelopeError, match="karnak-display is not JSON"):
        Envelope.from_headers(headers)


def test_kheops_albums_of_the_wrong_type_are_an_envelope_error(envelope: Envelope) -> None:
    headers = {**envelope.to_headers(), "karnak-kheops-albums": '["album-a"]'}

    with pytest.raises(EnvelopeError, match="kheops_albums"):
        Envelope.from_headers(headers)


def test_log_fields_contain_identifiers_but_no_display_values(envelope: Envelope) -> None:
    fields = envelope.log_fields()

    assert fields["instance_id"] == envelope.instance_id
    assert fields["destination"] == "research-pacs"
    assert fields["sop_instance_uid"] == envelope.sop_instance_uid
    rendered = repr(fields)
    for value in DISPLAY.values():
        assert value not in rendered
    assert "display" not in fields


# --- transfer events ---------------------------------------------------------------------------------


def test_transfer_event_body_round_trips(envelope: Envelope) -> None:
    event = TransferEvent.for_envelope(envelope, "failed", "research-pacs", "0xA700 (Out of resources)")

    restored = TransferEvent.from_body(event.to_body())

    assert restored == event
    assert restored.reason == "0xA700 (Out of resources)"
    assert restored.display == DISPLAY
    assert restored.received_at == envelope.received_at
    assert json.loads(event.to_body())["schema"] == EVENT_SCHEMA


def test_transfer_event_copies_the_envelope_identifiers(envelope: Envelope) -> None:
    event = TransferEvent.for_envelope(envelope, "sent", "research-pacs", None)

    assert event.instance_id == envelope.instance_id
    assert event.forward_node == "KARNAK-GW"
    assert event.study_instance_uid == envelope.study_instance_uid
    assert event.series_instance_uid == envelope.series_instance_uid
    assert event.attempt == 2


@pytest.mark.parametrize("kind", ["sent", "failed", "rejected"])
def test_transfer_event_routing_key_is_kind_then_destination(
    envelope: Envelope, kind: Literal["sent", "failed", "rejected"]
) -> None:
    event = TransferEvent.for_envelope(envelope, kind, "archive-2", None)

    assert event.routing_key == f"transfer.{kind}.archive-2"


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"kind": "lost", "destination": "x"}'])
def test_invalid_transfer_event_body_is_an_envelope_error(body: bytes) -> None:
    with pytest.raises(EnvelopeError, match="invalid transfer event"):
        TransferEvent.from_body(body)
