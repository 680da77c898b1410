"""The console's pages in a real browser: Debian's Chromium driven by Playwright (the `playwright` package).

- `console_server` (one per run): `karnak up` with the console, the receiver, the processor and the
  dicom-sender on free ports, their revisions and accounts in a PostgreSQL database of its own, and a
  storescp as the PACS the browser's destinations can point to; an account per role.
- `fresh_console` (one per module): the console alone on a SQLite database of its own, for a test
  that needs a configuration nobody else touched; `open_page(browser, fresh_console)` opens a page on it.
- `browser` (one per run): /usr/bin/chromium launched by Playwright (never a downloaded browser).
- `page`: a fresh browser context (no cookies) per test, its base URL the console's.
- `sign_in(page, role)`: through the login form, as a user of that role.
- `screenshot(page, name)`: docs/screenshots/NAME.png, the pictures the README shows.

Every test of this folder is marked `browser`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from karnak_shared.config import parse_config
from karnak_shared.topology import Topology
from tests.conftest import gateway_config
from tests.support.databases import postgres_database
from tests.support.servers import Gateway, StoreSCP, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
SERVICES = ("receiver", "processor", "dicom-sender", "console")
# One account per role (the first admin's generated password is not needed: these are made directly).
ACCOUNTS = {
    "admin": ("alice", "alice-browser-password"),
    "operator": ("oscar", "oscar-browser-password"),
    "viewer": ("victor", "victor-browser-password"),
}
PACS_AE_TITLE = "PACS_BROWSER"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: the console's pages in a real browser (Playwright, Chromium)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker("browser")


@dataclass
class ConsoleServer:
    url: str
    gateway: Gateway
    database_url: str
    pacs: StoreSCP
    config: dict[str, Any]
    # Deleted when the server stops: its own topology and those of the destinations tests made.
    topologies: list[Topology] = field(default_factory=list)

    def add_user(self, name: str, role: str, password: str) -> None:
        from karnak_console.accounts import AccountStore

        from karnak_shared.database import create_database_engine

        engine = create_database_engine(self.database_url)
        try:
            AccountStore(engine).add_user(name, role, password)
        finally:
            engine.dispose()

    def register_destinations(self, amqp_url: str, destinations: list[dict[str, Any]]) -> None:
        """Have the server's end delete the queues of destinations the browser made."""
        config = json.loads(json.dumps(self.config))
        # Only the queues matter, and they are named by id and type: nothing else of a destination is kept
        # (what it refers to, a project, is not in this configuration; its stored secrets are encrypted).
        config["forward_nodes"][0]["destinations"] = [_queue_skeleton(d) for d in destinations]
        self.topologies.append(Topology.from_config(parse_config(json.dumps(config))))

    def delete_topologies(self, amqp_url: str) -> None:
        """Delete the server's queues and exchanges, once it has stopped (best effort, as tests/conftest.py).

        Not through tests/conftest.py's `register_topology`: that deletes at the end of each test module,
        and this server outlives modules (its services would lose their queues under them).
        """
        try:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        except Exception:  # noqa: BLE001 - cleanup is best effort
            return
        try:
            for topology in self.topologies:
                topology.delete(connection.channel())
        except Exception:  # noqa: BLE001
            pass
        finally:
            if connection.is_open:
                connection.close()


def _queue_skeleton(destination: dict[str, Any]) -> dict[str, Any]:
    if destination.get("type") == "stow":
        return {"id": destination["id"], "type": "stow", "url": "http://127.0.0.1/"}
    return {"id": destination["id"], "type": "dicom", "ae_title": "Q", "hostname": "127.0.0.1", "port": 104}


@contextmanager
def running_console(amqp_url: str, workdir: Path, services: tuple[str, ...], database: str) -> Iterator[ConsoleServer]:
    """`karnak up --only SERVICES` on `database`, a storescp as PACS, and the accounts of `ACCOUNTS`."""
    prefix = f"karnak-test-pages-{uuid.uuid4().hex[:8]}"
    pacs = StoreSCP(PACS_AE_TITLE, free_port(), workdir / "pacs").start()
    config = gateway_config(amqp_url, prefix, workdir, [])
    config["database"] = {"url": database}
    ports = config["metrics"]["ports"]
    config["metrics"]["ports"] = {name: port for name, port in ports.items() if name in services}
    gateway = Gateway(config, workdir)
    server = ConsoleServer(f"http://127.0.0.1:{config['console']['port']}", gateway, database, pacs, config)
    server.topologies.append(Topology.from_config(parse_config(json.dumps(config))))
    try:
        gateway.start("--only", *services, timeout=120)
        for role, (name, password) in ACCOUNTS.items():
            server.add_user(name, role, password)
        yield server
    finally:
        gateway.stop()
        pacs.stop()
        server.register_destinations(amqp_url, stored_destinations(gateway.config_path))
        server.delete_topologies(amqp_url)


def stored_destinations(config_path: Path) -> list[dict[str, Any]]:
    """Every destination of the latest revision (made in the browser or by the API during the run)."""
    from karnak_shared.revisions import RevisionStore

    store = RevisionStore.open(config_path)
    try:
        latest = store.latest()
        nodes = latest.document.get("forward_nodes") or [] if latest is not None else []
        return [dict(d) for node in nodes for d in node.get("destinations") or []]
    finally:
        store.close()


@pytest.fixture(scope="session")
def console_server(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """The run's gateway with its console (PostgreSQL): what most page tests use, shared by them."""
    with postgres_database() as database:
        with running_console(amqp_url, tmp_path_factory.mktemp("console-pages"), SERVICES, database) as server:
            yield server


@pytest.fixture(scope="module")
def fresh_console(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """A console alone on a configuration of its own (SQLite): for what needs an untouched one (no project)."""
    workdir = tmp_path_factory.mktemp("fresh-console")
    with running_console(amqp_url, workdir, ("console",), f"sqlite:///{workdir / 'karnak.db'}") as server:
        yield server


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


def open_page(browser: Browser, server: ConsoleServer) -> Page:
    """A page in a new browser context (no cookies) whose relative URLs are the server's.

    Script errors and Content-Security-Policy violations are kept in `page_problems(page)`.
    """
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    _PROBLEMS[id(opened)] = problems
    return opened


_PROBLEMS: dict[int, list[str]] = {}


def page_problems(page: Page) -> list[str]:
    return _PROBLEMS.get(id(page), [])


@pytest.fixture
def page(browser: Browser, console_server: ConsoleServer) -> Iterator[Page]:
    """A page for the test; it fails at the end if a script failed or the CSP refused something."""
    opened = open_page(browser, console_server)
    yield opened
    problems = _PROBLEMS.pop(id(opened), [])
    opened.context.close()
    assert not problems, problems


def sign_in(page: Page, role: str = "admin") -> None:
    """Log in through the login form as the account of `role`; lands on the first page of the menu."""
    name, password = ACCOUNTS[role]
    page.goto("/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page: Page, name: str) -> Path:
    """A picture of the whole page for the README (docs/screenshots/NAME.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
