"""Ingest on a real two-node Ray cluster: both nodes read and land blocks.

How the cluster is run (own auth token, no `ray stop --force`, why not loopback): see
``tests/raycluster.py``.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.settings import load_settings
from edgeml.spec import load_spec
from edgeml.store import store_from_settings
from raycluster import Cluster, last_json, run_python

pytestmark = [pytest.mark.slow, pytest.mark.integration]


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="WARNING")
deadline = time.monotonic() + 60
while True:
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(" ".join(alive))
"""

CONNECT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="WARNING")
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
else:
    print("CONNECTED", len(ray.nodes()))
"""

INGEST = """
import json, sys
from edgeml.ingest.run import ingest
from edgeml.settings import load_settings
from edgeml.spec import load_spec

spec = load_spec(sys.argv[1])
settings = load_settings({"EDGEML_HOME": sys.argv[2], "RAY_ADDRESS": sys.argv[3]})
report = ingest(spec, settings, progress_bars=False)
print(json.dumps({
    "snapshot": report.snapshot.id,
    "rows": report.snapshot.rows,
    "sources": [
        {"name": s.name, "rows_in": s.rows_in, "rows_clean": s.rows_clean, "parts": len(s.parts),
         "nodes": sorted(s.nodes)}
        for s in report.sources
    ],
}))
"""


def test_ingest_spreads_over_both_nodes(
    two_node_cluster: Cluster,
    tmp_path: Path,
    write_spec_file: Callable[..., Path],
    sensor_csvs: Callable[..., tuple[list[Path], int]],
) -> None:
    _, rows = sensor_csvs(tmp_path / "data", files=8, machines=4, readings=1000)
    spec_path = write_spec_file(tmp_path, "{name: history, kind: file, path: data/*.csv}")
    home = tmp_path / "home"
    address, env = two_node_cluster.address, two_node_cluster.env

    # A driver holding another token is turned away (it takes a while: it runs alongside).
    intruder = subprocess.Popen(
        [sys.executable, "-c", CONNECT, address],
        env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        nodes = run_python(WAIT_FOR_NODES, address, env=env).split()
        assert len(nodes) == 2, f"the worker node did not join: {nodes}"

        report = last_json(run_python(INGEST, str(spec_path), str(home), address, env=env))
        (source,) = report["sources"]
        assert source["rows_in"] == source["rows_clean"] == rows
        assert report["rows"] == rows
        assert len(set(source["nodes"])) == 2, source
        assert set(source["nodes"]) == set(nodes)

        # What the nodes wrote is one lake, read back here without Ray.
        settings = load_settings({"EDGEML_HOME": str(home)})
        store = store_from_settings(settings)
        (snapshot,) = list_snapshots(store, "pumps")
        assert snapshot.id == report["snapshot"]
        assert read_parts(store, snapshot.parts, load_spec(spec_path).schema_).num_rows == rows

        out, err = intruder.communicate(timeout=120)
        assert "REFUSED" in out, f"{out}\n{err[-2000:]}"
    finally:
        if intruder.poll() is None:
            intruder.kill()
            intruder.communicate()
