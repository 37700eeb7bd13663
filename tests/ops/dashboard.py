"""Reading the Grafana dashboard's queries, shared by the structural and the live tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

__all__ = ["expressions", "promql", "variable_queries"]


def expressions(path: Path) -> list[tuple[str, str]]:
    """(panel title + refId, PromQL as written) for every target of every panel."""
    dashboard = json.loads(path.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((f"{panel['title']} [{target['refId']}]", target["expr"]))
    return found


def variable_queries(path: Path) -> list[tuple[str, str, str]]:
    """(variable, metric, label) for each ``label_values(metric, label)`` template variable."""
    dashboard = json.loads(path.read_text())
    found = []
    for var in dashboard["templating"]["list"]:
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"]["query"])
        assert match, f"variable {var['name']}: not a label_values() query"
        found.append((var["name"], match[1], match[2]))
    return found


def promql(expr: str, rate_interval: str = "30s") -> str:
    """The query Grafana sends with every variable at "All" (regex .*)."""
    return expr.replace("$__rate_interval", rate_interval).replace("$group", ".*").replace("$model", ".*")
