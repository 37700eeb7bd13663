"""promtool on the appliance's Prometheus config and rules; every alert has a unit test."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from edgeml import observability

ROOT = Path(__file__).resolve().parents[2]
APPLIANCE = ROOT / "appliance"
RULES = APPLIANCE / "rules" / "edgeml.rules.yml"
RULE_TESTS = Path(__file__).with_name("rules_test.yml")
DASHBOARD = APPLIANCE / "grafana" / "dashboards" / "edgeml-fleet.json"
#: series Prometheus makes itself
BUILTIN = {"up", "ALERTS"}

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool: apt-get install prometheus"
)


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def exported_names() -> set[str]:
    """Every series name observability.py's metrics export (counters and histograms expanded)."""
    names: set[str] = set()
    for metric in observability.REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.add(metric.name + "_total")
        if metric.type == "histogram":
            names |= {metric.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def metric_names(expr: str) -> set[str]:
    """Names of series an expression selects (identifiers followed by { or [ or standing alone)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    found = set(re.findall(r"\b(edgeml_[a-z0-9_]+)\b", without_strings))
    found |= {name for name in BUILTIN if re.search(rf"\b{name}\s*[{{\[]", without_strings)}
    return found


def test_the_config_is_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", str(APPLIANCE / "prometheus.yml"))


def test_the_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_stays_quiet_as_its_unit_test_says() -> None:
    promtool("test", "rules", str(RULE_TESTS))


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts == tested
    issue = {
        "EdgemlDriftBreach",
        "EdgemlEstimatedAccuracyDrop",
        "EdgemlDeviceOffline",
        "EdgemlTelemetryLag",
        "EdgemlSpoolDrops",
        "EdgemlRolloutStuck",
        "EdgemlAgentErrorRate",
        "EdgemlAgentP99Latency",
    }
    assert issue <= alerts


def test_rules_and_dashboard_use_only_metrics_edgeml_exports() -> None:
    from ops.dashboard import expressions

    known = exported_names() | BUILTIN
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [expr for _, expr in expressions(DASHBOARD)]
    used = set().union(*(metric_names(e) for e in exprs))
    assert used, "no metric found: the pattern is broken"
    assert used <= known, f"not defined in observability.py: {sorted(used - known)}"
