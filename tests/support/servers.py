"""Kept for the tests' imports: this lives in the runtime's testing kit, which the benchmarks use too."""

from karnak_shared.service.testing.servers import (
    DEFAULT_AMQP_URL,
    TEST_SECRETS_KEY,
    Gateway,
    ScriptedSCP,
    StoreSCP,
    amqp_reachable,
    dcmtk_env,
    dcmtk_tool,
    find_broker,
    free_port,
    metric_value,
    resident_bytes,
    storescu,
    wait_for_port,
    wait_until,
)

__all__ = [
    "DEFAULT_AMQP_URL",
    "TEST_SECRETS_KEY",
    "Gateway",
    "ScriptedSCP",
    "StoreSCP",
    "amqp_reachable",
    "dcmtk_env",
    "dcmtk_tool",
    "find_broker",
    "free_port",
    "metric_value",
    "resident_bytes",
    "storescu",
    "wait_for_port",
    "wait_until",
]
