"""deploy/grafana: the dashboard loads, its PromQL is valid (promtool), it shows what operators watch, and
the provisioning files point Grafana at the compose Prometheus and at the dashboard.

That the dashboard's metric names are the ones the services export is checked against running services
in tests/deploy/test_metrics_contract.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy_prometheus import run_promtool

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "karnak.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "karnak.yml"

# What the dashboard's variables stand for when its queries are checked outside Grafana.
VARIABLE_VALUES = {"$__rate_interval": "5m", "$destination": ".*", "$prefix": "karnak"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    """Every PromQL query of the dashboard, as written (with Grafana's variables)."""
    return [str(target["expr"]) for panel in panels() for target in panel["targets"]]


def concrete(expr: str) -> str:
    """The query with Grafana's variables replaced by values, as Prometheus would receive it."""
    for variable, value in VARIABLE_VALUES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str, prefixes: tuple[str, ...] = ("karnak_", "rabbitmq_")) -> set[str]:
    """The metric names with these prefixes that a PromQL expression reads (label values left out)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings) if name.startswith(prefixes)}


def test_the_dashboard_has_a_stable_uid_title_and_unique_panel_ids() -> None:
    loaded = dashboard()
    assert loaded["uid"] == "karnak-gateway"
    assert loaded["title"]
    ids = [panel["id"] for panel in loaded["panels"]]
    assert len(ids) == len(set(ids))


def test_the_panels_fit_the_grid_without_overlapping() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_query_uses_the_datasource_variable_and_every_variable_is_defined() -> None:
    defined = {variable["name"] for variable in dashboard()["templating"]["list"]}
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= defined, f"{panel['title']}: undefined variables {used - defined}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions only as rules: each query becomes a recording rule of a scratch file.
    rules = [{"record": f"dashboard:panel_{i}", "expr": concrete(e)} for i, e in enumerate(dashboard_expressions())]
    scratch = tmp_path / "dashboard-queries.yml"
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", scratch)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("instances in", r"rate\(karnak_instances_received_total"),
        (
            "instances out per destination",
            r'sum by \(destination\) \(rate\(karnak_instances_sent_total\{outcome="sent"',
        ),
        ("failures", r'outcome=~"retried\|failed"'),
        ("intake latency", r"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\(karnak_intake_seconds_bucket"),
        ("processing latency", r"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\(karnak_processing_seconds_bucket"),
        (
            "delivery latency",
            r"histogram_quantile\(0\.\d+, sum by \(le, destination\) \(rate\(karnak_delivery_seconds_bucket",
        ),
        (
            "end-to-end latency",
            r"histogram_quantile\(0\.\d+, sum by \(le, destination\) \(rate\(karnak_instance_transit_",
        ),
        ("queue depths from RabbitMQ", r"rabbitmq_queue_messages_ready\{queue=~"),
        ("the dead-letter queue", r'rabbitmq_queue_messages\{queue="\$prefix\.dead"\}'),
    ],
)
def test_the_dashboard_shows(what: str, pattern: str) -> None:
    assert any(re.search(pattern, expr) for expr in dashboard_expressions()), f"no panel shows {what}"


def test_metric_names_are_read_from_queries_not_from_label_values() -> None:
    expr = 'max by (queue) (rabbitmq_queue_messages{queue="karnak_x"}) / karnak_a_total{b="karnak_c"}'
    assert metric_names(expr) == {"rabbitmq_queue_messages", "karnak_a_total"}


def test_grafana_provisions_the_datasource_that_the_dashboard_selects_by_default() -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    assert datasources["apiVersion"] == 1
    (prometheus,) = datasources["datasources"]
    assert prometheus["type"] == "prometheus"
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == prometheus["uid"]


def test_grafana_loads_dashboards_from_files() -> None:
    providers = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
