"""Tracing: a span per pipeline stage under one root span per run, console output, trace ids in logs.

The agent's request spans are tested in tests/agent/test_server_tracing.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import edgeml
from edgeml.cli import main
from edgeml.observability import TRACING, TraceIdFilter, span
from edgeml.settings import TracingSettings

EXAMPLE = Path(edgeml.__file__).parent / "examples" / "pump-faults.yaml"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def tree(finished: Any) -> dict[str, list[str]]:
    """Each span's name -> the names of its children, in the order they ended."""
    by_id = {s.context.span_id: s for s in finished}
    children: dict[str, list[str]] = {s.name: [] for s in finished}
    for s in finished:
        if s.parent is not None and s.parent.span_id in by_id:
            children[by_id[s.parent.span_id].name].append(s.name)
    return children


@pytest.mark.slow
@pytest.mark.usefixtures("clean_env")
def test_a_pipeline_run_is_one_trace_with_a_span_per_stage(
    spans: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from raycluster import shared_local_ray
    from train.helpers import cheap_faults

    data = cheap_faults("traced-faults")
    data["profiles"] = ["x86-64-generic"]
    spec = tmp_path / "traced-faults.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    args = ["--machines", "3", "--readings", "400", "--seed", "8", "--fault-rate", "0.01"]
    args += ["--store-key", "landing/pumps/a.csv"]
    assert main(["simulate", "sensors", *args]) == 0
    shared_local_ray()
    code = main(["pipeline", "run", str(spec)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    finished = spans.get_finished_spans()
    assert len({s.context.trace_id for s in finished if s.name.startswith("pipeline.")}) == 1
    (root,) = [s for s in finished if s.name == "pipeline.run"]
    assert root.parent is None
    assert root.attributes["edgeml.spec"] == "traced-faults"
    assert tree(finished)["pipeline.run"] == [
        "pipeline.ingest",
        "pipeline.validate",
        "pipeline.features",
        "pipeline.train",
        "pipeline.bundle",
        "pipeline.publish",
    ]
    assert tree(finished)["pipeline.publish"] == ["bundle.publish"]
    (publish,) = [s for s in finished if s.name == "bundle.publish"]
    assert publish.attributes == {
        "edgeml.model": "traced-faults",
        "edgeml.version": 1,
        "edgeml.channel": "stable",
        "edgeml.action": "publish",
    }
    (bundle,) = [s for s in finished if s.name == "pipeline.bundle"]
    assert bundle.attributes["edgeml.profile"] == "x86-64-generic"
    assert all(s.status.is_ok for s in finished)


def _cloud_spec(tmp_path: Path) -> Path:
    """A cloud spec: on a local store its run is refused before any work (cheap, yet a span)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["pipeline"] = {"deployment_target": "cloud"}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    return spec


def _refused_cloud_run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    spec = _cloud_spec(tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEML_")}
    command = [str(Path(sys.executable).with_name("edgeml")), "pipeline", "run", str(spec)]
    env = clean | {"EDGEML_HOME": str(tmp_path / "home")} | env
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def _console_spans(stdout: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (one JSON object each) among the command's output."""
    found, depth, start = [], 0, 0
    for i, char in enumerate(stdout):
        if char == "{":
            depth, start = depth + 1, (i if depth == 0 else start)
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                found.append(json.loads(stdout[start : i + 1]))
    return found


def test_edgeml_tracing_console_prints_the_spans_continuing_a_callers_traceparent(tmp_path: Path) -> None:
    parent = "00f067aa0ba902b7"  # as a retraining job gets it from the central node
    proc = _refused_cloud_run(tmp_path, EDGEML_TRACING="console", TRACEPARENT=f"00-{TRACE_ID}-{parent}-01")
    assert proc.returncode == 2, proc.stderr
    assert "needs an S3 store" in proc.stderr
    (root,) = _console_spans(proc.stdout)
    assert root["name"] == "pipeline.run"
    assert root["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert root["parent_id"] == f"0x{parent}"
    assert root["status"]["status_code"] == "ERROR"
    assert root["resource"]["attributes"]["service.name"] == "edgeml"


def test_tracing_is_off_unless_configured(
    tmp_path: Path, clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pipeline", "run", str(_cloud_spec(tmp_path))]) == 2
    assert TRACING.provider is None
    assert "trace_id" not in capsys.readouterr().out


def test_log_lines_inside_a_span_carry_its_trace_id(spans: Any) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceIdFilter())
    handler.setFormatter(logging.Formatter("%(message)s%(trace)s"))
    with span("pipeline.run"):
        record = logging.LogRecord("edgeml", logging.INFO, __file__, 1, "inside", None, None)
        line = handler.format(record) if handler.filter(record) else ""
    outside = logging.LogRecord("edgeml", logging.INFO, __file__, 1, "outside", None, None)
    handler.filter(outside)
    (finished,) = spans.get_finished_spans()
    assert line == f"inside trace_id={finished.context.trace_id:032x} span_id={finished.context.span_id:016x}"
    assert handler.format(outside) == "outside"


def test_the_agent_samples_a_small_share_of_requests_by_default() -> None:
    assert TracingSettings().agent_sample_ratio == 0.01
    with pytest.raises(ValueError, match="agent_sample_ratio"):
        TracingSettings(agent_sample_ratio=1.5)
