"""Fixtures of the processor's tests: small Part 10 instances."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.fixtures import make_part10


@pytest.fixture
def part10() -> Callable[..., bytes]:
    """A factory of small Part 10 instances (see `make_part10`)."""
    return make_part10
