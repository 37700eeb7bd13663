"""The Grafana dashboard and provisioning are structurally valid and agree with each other."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .dashboard import expressions, variable_queries

APPLIANCE = Path(__file__).resolve().parents[2] / "appliance"
GRAFANA = APPLIANCE / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "edgeml-fleet.json"
PANEL_TYPES = {"row", "stat", "bargauge", "table", "timeseries", "status-history"}


def load() -> dict[str, object]:
    return dict(json.loads(DASHBOARD.read_text()))


def datasource_uid() -> str:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "edgeml.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def test_top_level_fields() -> None:
    dashboard = load()
    for key in ("uid", "title", "panels", "templating", "schemaVersion", "time", "refresh"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None  # provisioning assigns ids


def test_panels_have_unique_ids_known_types_and_a_grid_that_does_not_overlap() -> None:
    panels = load()["panels"]
    assert isinstance(panels, list)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}
        assert all(isinstance(v, int) and v >= 0 for v in grid.values())
        assert min(grid["w"], grid["h"]) >= 1
        assert grid["x"] + grid["w"] <= 24
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells
        if panel["type"] != "row":
            assert panel["title"]
            assert panel["description"]
            assert panel["targets"], panel["title"]


def test_every_target_queries_the_provisioned_datasource_with_unique_ref_ids() -> None:
    uid = datasource_uid()
    for panel in load()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}
            assert target["expr"].strip()
    for var in load()["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def test_the_panels_the_operator_needs_are_there() -> None:
    exprs = " ".join(expr for _, expr in expressions(DASHBOARD))
    for metric in (
        "edgeml_fleet_devices",
        "edgeml_device_model_info",
        "edgeml_inference_requests_total",
        "edgeml_inference_latency_seconds_bucket",
        "edgeml_drift_score_ratio",
        "edgeml_drift_threshold_ratio",
        "edgeml_estimated_accuracy_ratio",
        "edgeml_realized_accuracy_ratio",
        "edgeml_telemetry_lag_seconds",
        "edgeml_telemetry_dropped_batches_total",
        "edgeml_agent_swaps_total",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile(0.99" in exprs
    assert "histogram_quantile(0.5" in exprs
    assert {name for name, _, _ in variable_queries(DASHBOARD)} == {"group", "model"}


def test_the_provisioned_dashboard_folder_is_where_ansible_puts_the_json() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "edgeml.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    defaults = yaml.safe_load((APPLIANCE.parent / "ansible/roles/grafana/defaults/main.yml").read_text())
    assert defaults["grafana_dashboards_dir"].endswith(entry["options"]["path"])


def test_drift_is_charted_with_its_threshold_band() -> None:
    """Each feature's deciding value beside the bounds it is judged by, the bounds drawn dashed."""
    (panel,) = [p for p in load()["panels"] if p["title"] == "Drift value and threshold band by feature"]  # type: ignore[attr-defined]
    assert panel["type"] == "timeseries"
    value, band = (t["expr"] for t in panel["targets"])
    assert "edgeml_drift_score_ratio" in value
    # the deciding method's value only: the one with a band
    assert "and on (model, version, group, feature, method) edgeml_drift_threshold_ratio" in value
    assert "edgeml_drift_threshold_ratio" in band
    assert "bound" in band
    assert [t["legendFormat"].endswith("{{bound}}") for t in panel["targets"]] == [False, True]
    (dashed,) = panel["fieldConfig"]["overrides"]
    assert dashed["matcher"] == {"id": "byRegexp", "options": ".* (upper|lower)$"}
    assert {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 4]}} in dashed["properties"]
