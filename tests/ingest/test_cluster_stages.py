"""Ingest, validation and features all use both nodes of a two-node Ray cluster.

Where each task ran is read from Ray's own task records (the state API, served by the head's
dashboard on 127.0.0.1), not from anything edgeml reports about itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from raycluster import last_json, run_python, two_node_cluster

from .conftest import SENSOR_SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SPEC = (
    "name: pumps\nsources:\n  - {name: history, kind: file, path: data/*.csv}\n"
    + SENSOR_SCHEMA
    + """\
expectations:
  - {kind: unique, columns: [msg_id]}
  - {kind: not_null, column: machine_id}
features:
  window:
    - {name: temp_mean_5, column: temperature, agg: mean, size: 5}
  row:
    - {name: log_rpm, expr: "log1p(rpm)"}
task: clustering
search: {families: [kmeans]}
"""
)

STAGES = """
import json, sys, time
import ray
from ray.util.state import list_tasks
from edgeml.features.build import build_features
from edgeml.ingest.run import ingest
from edgeml.settings import load_settings
from edgeml.spec import load_spec
from edgeml.validate import validate

spec_path, home, address, dashboard = sys.argv[1:5]
ray.init(address=address, log_to_driver=False, logging_level="WARNING")
deadline = time.monotonic() + 60
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.2)
spec = load_spec(spec_path)
settings = load_settings({"EDGEML_HOME": home, "RAY_ADDRESS": address})
snapshot = ingest(spec, settings, progress_bars=False).snapshot
validation = validate(spec, settings)
features = build_features(spec, settings)
wanted = ("land_block", "_validate_part", "_split_part", "_feature_task", "_key_hashes")
nodes = {}
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # task events reach the state API a little after the fact
    tasks = list_tasks(address=dashboard, filters=[("state", "=", "FINISHED")], limit=10000, detail=True,
                       raise_on_missing_output=False)
    nodes = {}
    for t in tasks:
        for stage in wanted:
            if stage in t.name:
                nodes.setdefault(stage, set()).add(t.node_id)
    if len(nodes) == len(wanted) and all(len(v) == 2 for v in nodes.values()):
        break
    time.sleep(1)
print(json.dumps({
    "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
    "parts": len(snapshot.parts), "rows": snapshot.rows, "valid": validation.rows_valid,
    "feature_rows": features.rows, "feature_parts": len(features.parts),
    "stages": {k: sorted(v) for k, v in nodes.items()},
}))
"""


def test_ingest_validation_and_features_run_on_both_nodes(
    tmp_path: Path, sensor_csvs: Callable[..., tuple[list[Path], int]]
) -> None:
    _, rows = sensor_csvs(tmp_path / "data", files=8, machines=6, readings=400)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(SPEC, encoding="utf-8")
    with two_node_cluster(tmp_path, dashboard=True) as cluster:
        assert cluster.dashboard is not None
        out = run_python(
            STAGES,
            str(spec_path),
            str(tmp_path / "home"),
            cluster.address,
            cluster.dashboard,
            env=cluster.env,
        )
    report = last_json(out)
    assert len(report["nodes"]) == 2
    assert report["rows"] == report["valid"] == report["feature_rows"] == rows
    assert report["parts"] >= 2
    for stage in ("land_block", "_key_hashes", "_validate_part", "_split_part", "_feature_task"):
        assert sorted(report["stages"].get(stage, [])) == report["nodes"], (stage, report["stages"])
