"""Fixtures shared by the logic tests: small Part 10 instances (karnak_dicom.testing) and a recording publisher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from karnak_dicom.testing import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, make_part10
from karnak_shared.errors import BrokerUnavailable

__all__ = ["CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE", "Published", "RecordingPublisher", "make_part10"]


@pytest.fixture
def part10() -> Callable[..., bytes]:
    """A factory of small Part 10 instances (see `make_part10`)."""
    return make_part10


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    mandatory: bool


@dataclass
class RecordingPublisher:
    """Stands in for `karnak_shared.broker.Publisher`: records every publish, may fail on one of them."""

    fail_on_call: int | None = None  # 1-based number of the publish that raises BrokerUnavailable
    calls: list[Published] = field(default_factory=list)
    attempts: int = 0

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        *,
        mandatory: bool = True,
    ) -> None:
        self.attempts += 1
        if self.fail_on_call is not None and self.attempts >= self.fail_on_call:
            raise BrokerUnavailable(f"no confirm from RabbitMQ for {exchange}/{routing_key}")
        self.calls.append(Published(exchange, routing_key, body, dict(headers or {}), mandatory))


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()
