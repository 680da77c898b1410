"""The association slots: a total, a share per address, and the last ones kept for configured sources."""

from __future__ import annotations

import pytest

from karnak_receiver.admission import AssociationSlots
from karnak_shared.config import ListenerConfig, MetricsConfig, Source
from karnak_shared.errors import ConfigError

LISTED = Source(ae_title="CT01")
HOST_BOUND = Source(ae_title="PACS", hostname="10.0.0.9")


def _slots(**settings: int) -> AssociationSlots:
    return AssociationSlots(ListenerConfig(**settings))


def _alive() -> bool:
    return True


def test_unlisted_callers_leave_the_reserved_slots_to_configured_sources() -> None:
    slots = _slots(max_associations=4, reserved_for_sources=2, max_associations_per_peer=10)
    assert slots.claim(1, "10.0.0.1", None, _alive) is None
    assert slots.claim(2, "10.0.0.2", None, _alive) is None
    assert slots.claim(3, "10.0.0.3", None, _alive) == "the 2 associations left are kept for configured sources"
    assert slots.claim(4, "10.0.0.4", LISTED, _alive) is None
    assert slots.claim(5, "10.0.0.5", LISTED, _alive) is None
    assert slots.claim(6, "10.0.0.6", LISTED, _alive) == "all 4 associations are in use"


def test_one_address_gets_its_share_but_a_host_bound_source_is_not_limited_by_it() -> None:
    slots = _slots(max_associations=10, reserved_for_sources=0, max_associations_per_peer=2)
    assert slots.claim(1, "10.0.0.9", LISTED, _alive) is None
    assert slots.claim(2, "10.0.0.9", LISTED, _alive) is None
    assert (
        slots.claim(3, "10.0.0.9", LISTED, _alive)
        == "10.0.0.9 already has 2 associations, the most one address may have"
    )
    assert slots.claim(4, "10.0.0.9", HOST_BOUND, _alive) is None
    assert slots.claim(5, "10.0.0.8", LISTED, _alive) is None


def test_a_slot_is_free_again_once_its_association_ended() -> None:
    slots = _slots(max_associations=2, reserved_for_sources=0, max_associations_per_peer=2)
    running = {1: True, 2: True}
    assert slots.claim(1, "a", LISTED, lambda: running[1]) is None
    assert slots.claim(2, "a", LISTED, lambda: running[2]) is None
    assert slots.claim(3, "a", LISTED, _alive) is not None
    running[1] = False  # its thread ended without a release event (a reset, a crash)
    assert slots.claim(3, "a", LISTED, _alive) is None
    slots.release(2)
    assert slots.in_use == 1


def test_the_reserve_must_leave_room_for_anyone_else() -> None:
    from pydantic import ValidationError

    with pytest.raises((ValidationError, ConfigError), match="reserved_for_sources must be smaller"):
        ListenerConfig(max_associations=4, reserved_for_sources=4)


def test_ops_endpoints_listen_on_loopback_unless_configured() -> None:
    assert MetricsConfig().host == "127.0.0.1"
