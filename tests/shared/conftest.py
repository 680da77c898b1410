"""Fixtures of the shared library's tests: a fresh SQLite or PostgreSQL database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.databases import database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of each kind; the PostgreSQL one is dropped after the test."""
    try:
        with database_url(request.param, tmp_path) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
