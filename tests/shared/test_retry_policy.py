"""Back-off tiers, retries through the delay queues and parking in the dead-letter queue."""

from __future__ import annotations

import re
from typing import Any

import pytest

from karnak_shared import header_names
from karnak_shared.envelope import Envelope
from karnak_shared.retry import MAX_REASON_LENGTH, park, schedule_retry
from karnak_shared.service.redelivery import RetryPolicy
from karnak_shared.topology import Topology

SEND_QUEUE = "karnak.send.dicom.research-pacs"


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix="karnak", retry_delays=(5, 30, 120), delivery_limit=20, send_queues=(SEND_QUEUE,))


@pytest.fixture
def envelope() -> Envelope:
    return Envelope(
        forward_node="KARNAK-GW",
        destination="research-pacs",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4",
        transfer_syntax="1.2.840.10008.1.2.1",
        attempt=1,
    )


# --- RetryPolicy ---------------------------------------------------------------------------------


def test_each_attempt_waits_its_tier() -> None:
    policy = RetryPolicy((5, 30, 120, 600, 3600))

    assert [policy.delay_for(n) for n in range(5)] == [5, 30, 120, 600, 3600]


def test_past_the_last_tier_there_is_no_more_retry() -> None:
    policy = RetryPolicy((5, 30))

    assert policy.delay_for(2) is None
    assert policy.delay_for(100) is None


def test_a_policy_without_tiers_never_retries() -> None:
    assert RetryPolicy(()).delay_for(0) is None


# --- schedule_retry --------------------------------------------------------------------------------


def test_retry_goes_to_the_retry_exchange_under_the_original_routing_key(
    publisher: Any, topology: Topology, envelope: Envelope
) -> None:
    schedule_retry(publisher, topology, SEND_QUEUE, envelope, b"DICM-body", 30)

    (call,) = publisher.calls
    assert call.exchange == "karnak.retry"
    assert call.routing_key == SEND_QUEUE
    assert call.body == b"DICM-body"
    assert call.mandatory is True  # an unbound tier must be an error, not a silent drop


def test_retry_increments_the_attempt_and_sets_the_tier_header(
    publisher: Any, topology: Topology, envelope: Envelope
) -> None:
    schedule_retry(publisher, topology, SEND_QUEUE, envelope, b"", 30)

    headers = publisher.calls[0].headers
    assert headers[header_names.RETRY_TIER] == "30"
    assert Envelope.from_headers(headers).attempt == 2
    assert Envelope.from_headers(headers).instance_id == envelope.instance_id
    assert envelope.attempt == 1  # the original envelope is left as it was


def test_retry_tier_header_matches_the_binding_of_its_delay_queue(
    publisher: Any, topology: Topology, envelope: Envelope
) -> None:
    for delay in topology.retry_delays:
        schedule_retry(publisher, topology, SEND_QUEUE, envelope, b"", delay)

    assert [c.headers[header_names.RETRY_TIER] for c in publisher.calls] == [str(d) for d in topology.retry_delays]


# --- park ----------------------------------------------------------------------------------------


def test_park_publishes_to_the_dead_exchange_with_reason_and_origin(
    publisher: Any, topology: Topology, envelope: Envelope
) -> None:
    headers = {**envelope.to_headers(), header_names.RETRY_TIER: "30"}

    park(
        publisher,
        topology,
        exchange="karnak.send",
        routing_key=SEND_QUEUE,
        headers=headers,
        body=b"DICM-body",
        reason="0x0122 (SOP Class not supported)",
    )

    (call,) = publisher.calls
    assert call.exchange == "karnak.dead"
    assert call.routing_key == "karnak.dead"
    assert call.body == b"DICM-body"
    assert call.headers[header_names.REASON] == "0x0122 (SOP Class not supported)"
    assert call.headers[header_names.ORIGIN_EXCHANGE] == "karnak.send"
    assert call.headers[header_names.ORIGIN_ROUTING_KEY] == SEND_QUEUE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", call.headers[header_names.PARKED_AT])


def test_park_keeps_the_envelope_and_drops_the_retry_tier(
    publisher: Any, topology: Topology, envelope: Envelope
) -> None:
    headers = {**envelope.to_headers(), header_names.RETRY_TIER: "30"}

    park(
        publisher,
        topology,
        exchange="karnak.send",
        routing_key=SEND_QUEUE,
        headers=headers,
        body=b"",
        reason="x",
    )

    parked = publisher.calls[0].headers
    assert header_names.RETRY_TIER not in parked
    assert Envelope.from_headers(parked) == envelope
    assert header_names.RETRY_TIER in headers  # the caller's headers are not modified


def test_park_truncates_the_reason_to_1000_characters(publisher: Any, topology: Topology) -> None:
    reason = "association aborted: " + "x" * 5000

    park(
        publisher,
        topology,
        exchange="karnak.send",
        routing_key=SEND_QUEUE,
        headers={},
        body=b"",
        reason=reason,
    )

    parked_reason = publisher.calls[0].headers[header_names.REASON]
    assert MAX_REASON_LENGTH == 1000
    assert len(parked_reason) == 1000
    assert parked_reason == reason[:1000]


def test_park_keeps_a_short_reason_whole(publisher: Any, topology: Topology) -> None:
    park(publisher, topology, exchange="e", routing_key="k", headers={}, body=b"", reason="short")

    assert publisher.calls[0].headers[header_names.REASON] == "short"
