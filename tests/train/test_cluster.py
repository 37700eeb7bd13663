"""Training on a real two-node Ray cluster: the search's trials run on both nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.simulate.sensors import SensorSimulation, simulate_sensors, write_csv
from raycluster import Cluster, last_json, run_python

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SPEC = """
name: cluster-train
sources: [{name: history, kind: file, path: data/*.csv}]
schema:
  timestamp: ts
  entity: machine_id
  columns:
    msg_id: {type: string}
    ts: {type: timestamp}
    machine_id: {type: string}
    temperature: {type: float}
    vibration: {type: float}
    pressure: {type: float}
    rpm: {type: float}
    power_kw: {type: float}
    fault: {type: category}
    is_anomaly: {type: bool}
features: {exclude: [msg_id, fault]}
target: is_anomaly
task: classification
search:
  families: [random_forest]
  trials: 4
  scheduler: fifo
  # Two at a time (one CPU per node) and long enough (seconds) that the second node's worker is up
  # before the first is done; four trials show that as well as eight did.
  space: {random_forest: {n_estimators: {low: 200, high: 300, int: true}}}
"""

TRAIN = """
import json, sys
from edgeml.ingest.run import ingest
from edgeml.settings import load_settings
from edgeml.spec import load_spec
from edgeml.train.run import train
from edgeml.validate import validate
spec = load_spec(sys.argv[1])
settings = load_settings({"EDGEML_HOME": sys.argv[2], "RAY_ADDRESS": sys.argv[3]})
ingest(spec, settings, progress_bars=False)
validate(spec, settings)
report = train(spec, settings)
print(json.dumps({"nodes": report.nodes, "trials": report.trials, "version": report.version}))
"""


def test_trials_run_on_both_nodes(two_node_cluster: Cluster, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with (data / "pumps.csv").open("w") as out:
        write_csv(simulate_sensors(SensorSimulation(machines=4, readings=1500, fault_rate=0.01, seed=2)), out)
    (tmp_path / "spec.yaml").write_text(SPEC)
    stdout = run_python(
        TRAIN,
        str(tmp_path / "spec.yaml"),
        str(tmp_path / "home"),
        two_node_cluster.address,
        env=two_node_cluster.env,
        timeout=600,
    )
    report = last_json(stdout)
    assert report["trials"] == 4
    assert report["nodes"] == 2, json.dumps(report)
