"""deploy/prometheus: the alert rules pass `promtool check rules` and their own unit tests, the compose
Prometheus configuration passes `promtool check config`, and the four alerts the operators asked for exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "rules.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"

INSTALL_HINT = "`apt-get install -y prometheus` (Debian's package ships promtool; CI's .ci/run installs it)"


def promtool() -> str:
    """The path of promtool; fails the test, saying how to install it, when there is none."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not installed: {INSTALL_HINT}", pytrace=False)
    return path


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=120)


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def rule_expressions() -> list[str]:
    """Every PromQL expression of rules.yml."""
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = run_promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", RULES_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yml"
    broken.write_text(RULES.read_text(encoding="utf-8").replace("== 0", "== ", 1))
    assert run_promtool("check", "rules", broken).returncode != 0


def test_promtool_accepts_the_compose_prometheus_configuration() -> None:
    result = run_promtool("check", "config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert set(alerts()) <= tested, f"alerts never seen firing in rules.test.yml: {sorted(set(alerts()) - tested)}"


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    for name, rule in alerts().items():
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        assert rule.get("annotations", {}).get("summary"), name
        assert rule.get("annotations", {}).get("description"), name


@pytest.mark.parametrize(
    ("concern", "pattern"),
    [
        ("a backlog growing", r"deriv\(rabbitmq_queue_messages\{[^}]*send"),
        ("the dead-letter queue not empty", r'rabbitmq_queue_messages\{queue="karnak\.dead"\}'),
        ("the send failure ratio", r'karnak_instances_sent_total\{outcome=~"retried\|failed"\}.*/'),
        ("a service down", r'up\{job="karnak"\} == 0'),
    ],
)
def test_the_rules_alert_on(concern: str, pattern: str) -> None:
    assert any(re.search(pattern, expr, re.DOTALL) for expr in rule_expressions()), f"no alert on {concern}"


def test_the_failure_ratio_covers_both_senders() -> None:
    # Both senders count into karnak_instances_sent_total (karnak_shared.sender_metrics): the ratio must
    # not narrow it to one of them.
    ratio = alerts()["KarnakSendFailureRatioHigh"]["expr"]
    assert "karnak_instances_sent_total" in ratio
    assert "component" not in ratio and "karnak_stow_" not in ratio
