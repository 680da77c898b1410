"""The console in-process on a real database (SQLite file, or PostgreSQL), with one token per role."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from karnak_console.app import create_app
from karnak_console.context import Console
from karnak_console.main import open_store
from karnak_console.roles import ROLES

from karnak_shared.config import load_config

SECRETS_KEY = "8f6a1c0b5e9d2f4a7c3b1e0d9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a"
PROFILE = Path(__file__).parents[1] / "data" / "karnak-profiles"


def write_config(path: Path, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "database": {"url": f"sqlite:///{path.parent / 'console.db'}"},
        "secrets": {"key": SECRETS_KEY},
        "broker": {"prefix": f"karnak-test-{uuid.uuid4().hex[:10]}"},
        "console": {"admin_password_file": str(path.parent / "admin-password")},
        "forward_nodes": [{"ae_title": "KARNAK-GW"}],
    }
    config.update(sections)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class ConsoleUnderTest:
    console: Console
    client: TestClient
    tokens: dict[str, str]

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, url: str, role: str = "admin", **kw: Any) -> Any:
        return self.client.get(url, headers=self.as_(role), **kw)

    def post(self, url: str, role: str = "admin", **kw: Any) -> Any:
        return self.client.post(url, headers={**self.as_(role), **kw.pop("headers", {})}, **kw)

    def put(self, url: str, role: str = "admin", **kw: Any) -> Any:
        return self.client.put(url, headers={**self.as_(role), **kw.pop("headers", {})}, **kw)

    def delete(self, url: str, role: str = "admin", **kw: Any) -> Any:
        return self.client.delete(url, headers=self.as_(role), **kw)


def start_console(config_path: Path) -> ConsoleUnderTest:
    store = open_store(load_config(config_path))
    console = Console.build(store, status=False, announce=False)
    client = TestClient(create_app(console))
    tokens = {role: console.accounts.create_token(f"test-{role}", role, "tests")[1] for role in ROLES}
    return ConsoleUnderTest(console, client, tokens)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "karnak.yml")


@pytest.fixture
def app(config_path: Path) -> Iterator[ConsoleUnderTest]:
    running = start_console(config_path)
    yield running
    running.client.close()
    running.console.store.close()
    running.console.accounts.engine.dispose()


def profile_text(name: str = "profileByDefault.yml") -> str:
    return (PROFILE / name).read_text()
