"""The shipped Prometheus rules: valid for promtool, and every alert proven to fire on a
synthetic failure and to stay quiet on a healthy series (deploy/prometheus/*.test.yml)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.environment import system_binary

RULES_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = RULES_DIR / "streamd-rules.yml"
RULE_TESTS = RULES_DIR / "streamd-rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return system_binary("promtool", "prometheus")


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_on_its_failure_and_stays_quiet_beside_it(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=120, cwd=RULES_DIR
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_expects_it_to_fire() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"] for test in tests for check in test.get("alert_rule_test", []) if check.get("exp_alerts")
    }
    assert alerts and alerts == fired, f"alerts without a firing test: {sorted(alerts - fired)}"
