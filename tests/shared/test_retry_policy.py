"""Back-off tiers, retries through the delay queues and parking in the dead-letter queue (the one path)."""

from __future__ import annotations

import re

import pytest

from karnak_shared import header_names
from karnak_shared.envelope import Envelope
from karnak_shared.service.authentication import Signer
from karnak_shared.service.messages import Received
from karnak_shared.service.outcomes import Park, Retry
from karnak_shared.service.redelivery import MAX_REASON_LENGTH, Redelivery, RetryPolicy
from karnak_shared.topology import Topology

SEND_QUEUE = "karnak.send.dicom.research-pacs"
KEY = bytes.fromhex("ab" * 32)


@pytest.fixture
def topology() -> Topology:
    return Topology(prefix="karnak", retry_delays=(5, 30, 120), delivery_limit=20, send_queues=(SEND_QUEUE,))


@pytest.fixture
def redelivery(topology: Topology) -> Redelivery:
    return Redelivery(topology, RetryPolicy(topology.retry_delays), Signer(KEY))


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


def received(envelope: Envelope, body: bytes = b"DICM-body", **extra: object) -> Received:
    return Received(SEND_QUEUE, {**envelope.to_headers(), **extra}, body, "karnak.send", SEND_QUEUE)


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


# --- retry ---------------------------------------------------------------------------------------


def test_retry_goes_to_the_retry_exchange_under_the_queue_of_the_message(
    redelivery: Redelivery, envelope: Envelope
) -> None:
    (publish,) = redelivery.action(Retry("busy"), received(envelope)).publishes

    assert publish.exchange == "karnak.retry"
    assert publish.routing_key == SEND_QUEUE
    assert publish.body == b"DICM-body"
    assert publish.mandatory is True  # an unbound tier must be an error, not a silent drop


def test_retry_increments_the_attempt_signs_again_and_sets_the_tier_of_the_attempt(
    redelivery: Redelivery, envelope: Envelope
) -> None:
    (publish,) = redelivery.action(Retry("busy"), received(envelope)).publishes

    headers = publish.headers
    assert headers[header_names.RETRY_TIER] == "30"  # attempt 1 waits the second tier
    assert Envelope.from_headers(headers).attempt == 2
    assert Envelope.from_headers(headers).instance_id == envelope.instance_id
    assert redelivery.signer.check(headers, publish.body)
    assert envelope.attempt == 1  # the original envelope is left as it was


def test_retry_tier_header_matches_the_binding_of_its_delay_queue(redelivery: Redelivery, topology: Topology) -> None:
    tiers = [
        redelivery.retry({}, b"", SEND_QUEUE, n, d).headers[header_names.RETRY_TIER] for n, d in enumerate((5, 30, 120))
    ]

    assert tiers == [str(d) for d in topology.retry_delays]


def test_a_retry_past_the_last_tier_is_parked_as_retries_exhausted(redelivery: Redelivery, envelope: Envelope) -> None:
    last = envelope.model_copy(update={"attempt": 3})
    action = redelivery.action(Retry("HTTP 503"), received(last))

    assert action.parked == Park("gave up after 4 attempts: HTTP 503", "retries-exhausted")
    assert action.publishes[0].exchange == "karnak.dead"


# --- park ----------------------------------------------------------------------------------------


def test_park_publishes_to_the_dead_exchange_with_reason_cause_and_origin(
    redelivery: Redelivery, envelope: Envelope
) -> None:
    action = redelivery.action(Park("0x0122 (SOP Class not supported)", "refused"), received(envelope))

    (publish,) = action.publishes
    assert publish.exchange == "karnak.dead"
    assert publish.routing_key == "karnak.dead"
    assert publish.body == b"DICM-body"
    assert publish.headers[header_names.REASON] == "0x0122 (SOP Class not supported)"
    assert publish.headers[header_names.CAUSE] == "refused"
    assert publish.headers[header_names.ORIGIN_EXCHANGE] == "karnak.send"
    assert publish.headers[header_names.ORIGIN_ROUTING_KEY] == SEND_QUEUE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", publish.headers[header_names.PARKED_AT])


def test_park_keeps_the_envelope_and_drops_the_retry_tier(redelivery: Redelivery, envelope: Envelope) -> None:
    message = received(envelope, b"", **{header_names.RETRY_TIER: "30"})

    (publish,) = redelivery.action(Park("x"), message).publishes

    assert header_names.RETRY_TIER not in publish.headers
    assert Envelope.from_headers(publish.headers) == envelope
    assert header_names.RETRY_TIER in message.headers  # the delivered headers are not modified


def test_park_truncates_the_reason_to_1000_characters(redelivery: Redelivery, envelope: Envelope) -> None:
    reason = "association aborted: " + "x" * 5000

    (publish,) = redelivery.action(Park(reason), received(envelope)).publishes

    assert MAX_REASON_LENGTH == 1000
    assert publish.headers[header_names.REASON] == reason[:1000]


def test_park_keeps_a_short_reason_whole(redelivery: Redelivery, envelope: Envelope) -> None:
    (publish,) = redelivery.action(Park("short"), received(envelope)).publishes

    assert publish.headers[header_names.REASON] == "short"
