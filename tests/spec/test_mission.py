"""The mission's parameters: pipeline.type, deployment_target and data_volume, each with its effect."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import edgeml
from edgeml.cli import main
from edgeml.errors import SpecError, UserError
from edgeml.settings import load_settings
from edgeml.spec import Spec, parse_spec
from edgeml.spec.mission import pipeline_warnings, run_time_issues

EXAMPLE = yaml.safe_load((Path(edgeml.__file__).parent / "examples" / "pump-faults.yaml").read_text())


def spec_data(**pipeline: Any) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    if pipeline:
        data["pipeline"] = pipeline
    return data


def parse(data: dict[str, Any]) -> Spec:
    return parse_spec(yaml.safe_dump(data, sort_keys=False), source="spec.yaml")


def issues(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse(data)
    return {i.path: i.message for i in info.value.issues}


def test_defaults_keep_todays_specs_valid() -> None:
    spec = parse(spec_data())
    assert spec.pipeline.type == "batch-training"
    assert spec.pipeline.deployment_target == "edge"
    assert spec.pipeline.data_volume == "small"
    assert pipeline_warnings(spec) == []


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("type", "nightly", "batch-training"),
        ("deployment_target", "mars", "on-premise"),
        ("data_volume", "huge", "medium"),
    ],
)
def test_a_bad_value_is_an_error_at_its_yaml_path(key: str, value: str, allowed: str) -> None:
    found = issues(spec_data(**{key: value}))
    assert list(found) == [f"pipeline.{key}"]
    assert allowed in found[f"pipeline.{key}"]


def test_unknown_keys_and_bad_numbers_are_errors_too() -> None:
    found = issues(spec_data(kind="batch", retries=-1, sample_rows=10))
    assert set(found) == {"pipeline.kind", "pipeline.retries", "pipeline.sample_rows"}


def test_streaming_needs_an_mqtt_source() -> None:
    assert parse(spec_data(type="streaming")).pipeline.type == "streaming"  # the example has one
    data = spec_data(type="streaming")
    data["sources"] = [s for s in data["sources"] if s["kind"] != "mqtt"]
    assert "MQTT source" in issues(data)["pipeline.type"]


@pytest.mark.parametrize("kind", ["real-time-inference", "streaming"])
def test_only_batch_and_hybrid_pipelines_take_a_schedule(kind: str) -> None:
    assert parse(spec_data(type="hybrid", schedule="6h")).pipeline.schedule is not None
    found = issues(spec_data(type=kind, schedule="6h"))
    assert "only batch-training and hybrid" in found["pipeline.schedule"]


@pytest.mark.parametrize("target", ["on-premise", "hybrid"])
def test_serving_on_the_cluster_needs_an_x86_profile(target: str) -> None:
    data = spec_data(deployment_target=target)
    data["profiles"] = ["arm64-rpi4", "jetson-orin"]
    assert "x86-64 profile" in issues(data)["profiles"]
    data["profiles"] = ["arm64-rpi4", "x86-64-generic"]
    assert parse(data).pipeline.deployment_target == target
    data["profiles"] = ["my-own-board"]  # a profile of the appliance home: not judged here
    assert parse(data).profiles == ["my-own-board"]


def test_large_data_refuses_window_features_without_an_entity() -> None:
    data = spec_data(data_volume="large")
    data["features"]["window"] = [{"name": "t_mean", "column": "temperature", "agg": "mean", "size": 5}]
    assert parse(data).pipeline.data_volume == "large"
    del data["schema"]["entity"]
    assert "schema.entity" in issues(data)["features.window"]


def test_medium_data_warns_about_what_would_load_everything(tmp_path: Path) -> None:
    data = spec_data(data_volume="medium")
    data["sources"].append({"name": "api", "kind": "http", "url": "http://127.0.0.1:9/readings"})
    data["search"]["families"] = ["random_forest", "logistic"]
    data["search"].pop("space", None)
    warnings = pipeline_warnings(parse(data))
    assert any(w.startswith("sources[2]: HTTP source 'api' has no pagination") for w in warnings)
    sampled = next(w for w in warnings if w.startswith("search.families"))
    assert sampled.startswith("search.families: random_forest fit in memory")
    assert "1,000,000 rows" in sampled
    assert "(logistic: every row, in batches)" in sampled
    data["search"]["families"] = ["logistic", "mlp"]  # both stream: nothing trains on a sample
    assert not any(w.startswith("search.families") for w in pipeline_warnings(parse(data)))

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["spec", "check", "--format", "json", str(path)]) == 0
    assert main(["spec", "check", str(path)]) == 0


def test_spec_check_prints_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = spec_data(data_volume="large")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["spec", "check", "--format", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("stratified sample" in w for w in report[0]["warnings"])


def test_the_cloud_target_needs_s3_over_tls(tmp_path: Path) -> None:
    spec = parse(spec_data(deployment_target="cloud"))
    local = load_settings({"EDGEML_HOME": str(tmp_path)})
    assert "needs an S3 store, not file://" in run_time_issues(spec, local)[0]
    plain = load_settings(
        {"EDGEML_HOME": str(tmp_path), "EDGEML_STORE_URL": "s3://edgeml", "EDGEML_S3_SECURE": "false"}
    )
    assert "TLS" in run_time_issues(spec, plain)[0]
    tls = load_settings({"EDGEML_HOME": str(tmp_path), "EDGEML_STORE_URL": "s3://edgeml"})
    assert run_time_issues(spec, tls) == []
    assert run_time_issues(parse(spec_data(deployment_target="edge")), local) == []


def test_the_pipeline_refuses_a_cloud_run_before_any_work(tmp_path: Path) -> None:
    from edgeml.pipeline import run_pipeline

    spec = parse(spec_data(deployment_target="cloud"))
    with pytest.raises(UserError, match="S3 store"):
        run_pipeline(spec, load_settings({"EDGEML_HOME": str(tmp_path)}))
    assert not (tmp_path / "store").exists()


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_schedule_refuses_a_pipeline_that_is_not_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEML_HOME", str(tmp_path / "home"))
    path = _write(tmp_path, spec_data(type="real-time-inference"))
    assert main(["pipeline", "schedule", str(path), "--every", "1h"]) == 2
    assert "only batch-training and hybrid pipelines run on a schedule" in capsys.readouterr().err
    path = _write(tmp_path, spec_data())
    assert main(["pipeline", "schedule", str(path)]) == 2
    assert "pass --every or set pipeline.schedule" in capsys.readouterr().err
    assert main(["pipeline", "schedule", str(path), "--every", "soon"]) == 2
    assert "--every 'soon'" in capsys.readouterr().err
