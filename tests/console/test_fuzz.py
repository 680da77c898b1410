"""Fuzz every operation of the console's own OpenAPI document (schemathesis): no answer is a 500.

Bounded: a few examples per operation, with an admin token so the requests reach the handlers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.console.conftest import ConsoleUnderTest, start_console, write_config
from tests.support.servers import free_port

pytestmark = pytest.mark.fuzz
# FastAPI writes OpenAPI 3.1; schemathesis 3 reads it behind this switch.
schemathesis.experimental.OPEN_API_3_1.enable()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleUnderTest]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "karnak.yml"
    # No RabbitMQ on this port: the routes that need one answer 503 at once (a broker that is down is one
    # of the inputs), and the fuzzing does not wait on a real broker's timeouts.
    broker = {"url": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "prefix": "karnak-test-fuzz"}
    running = start_console(write_config(path, broker=broker))
    yield running
    running.client.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: ConsoleUnderTest) -> Any:
    return schemathesis.from_dict(fuzzed.client.app.openapi(), app=fuzzed.client.app)  # type: ignore[attr-defined]


@schemathesis.serializer("text/csv")
class TextBody:
    """CSV files and profiles are text: send what was generated as the body."""

    def as_requests(self, context: Any, value: Any) -> dict[str, Any]:
        return {"data": value if isinstance(value, str | bytes) else str(value)}

    def as_werkzeug(self, context: Any, value: Any) -> dict[str, Any]:
        return self.as_requests(context, value)


schemathesis.serializer("application/x-yaml")(TextBody)
schema = schemathesis.from_pytest_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_makes_the_console_fail(case: Any, fuzzed: ConsoleUnderTest) -> None:
    response = case.call_asgi(headers=fuzzed.as_("admin"))
    where = f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    # 503 is the console's answer when RabbitMQ is down (as here), with the reason; anything else 5xx is a bug.
    assert response.status_code < 500 or (response.status_code == 503 and "detail" in response.json()), where
