"""`edgeml export` end to end: trained models out to ONNX Runtime and OpenVINO, or refused clearly."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.export.run import export_model
from edgeml.settings import Settings, load_settings
from edgeml.train.run import train
from train.helpers import faults_spec, make_snapshot, spec_from_dict, task_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, dict[str, str]]]:
    """One model version per family, on the same simulated fault data: family -> models:/ URI."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    home = tmp_path_factory.mktemp("export-home")
    (home / "specs").mkdir()
    settings = load_settings({"EDGEML_HOME": str(home)})
    uris = {}
    try:
        for family in ("random_forest", "logistic", "mlp", "hist_gradient_boosting"):
            data = faults_spec(
                f"faults-{family.replace('_', '-')}", families=[family], trials=1, scheduler="fifo"
            )
            data["gates"] = {}
            data["search"]["space"] = {}
            spec = spec_from_dict(data, home / "specs")
            snapshot = make_snapshot(spec, settings, task_frame("classification"))
            report = train(spec, settings, snapshot)
            uris[family] = f"models:/{report.model}/{report.version}"
        # OpenVINO computes in float32: an MLP whose row features use no timestamp.
        data = faults_spec("faults-mlp-ov", families=["mlp"], trials=1, scheduler="fifo")
        data["gates"], data["search"]["space"] = {}, {}
        data["features"]["row"] = [r for r in data["features"]["row"] if "(ts)" not in r["expr"]]
        spec = spec_from_dict(data, home / "specs")
        report = train(spec, settings, make_snapshot(spec, settings, task_frame("classification")))
        uris["mlp-ov"] = f"models:/{report.model}/{report.version}"
        yield settings, uris
    finally:
        if started:
            ray.shutdown()


def test_a_forest_for_onnx_runtime(trained: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    settings, uris = trained
    report = export_model(uris["random_forest"], "x86-64-generic", tmp_path / "out", settings)
    assert report.parity["max_abs_diff"] <= 1e-4
    assert report.parity["label_agreement"] >= 0.999
    assert report.latency["p50_ms"] > 0
    assert report.latency["batch256_rows_per_s"] > 0
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {"model.onnx", "export_report.json"}
    stored = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert stored["files"][0]["sha256"]
    assert stored["profile"] == "x86-64-generic"


def test_openvino_exports_are_held_to_parity(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """An MLP without timestamp features converts for OpenVINO and is checked like any export.

    Known today: OpenVINO's CPU plugin does not reproduce the model within 1e-4 on some rows
    (under investigation), so the parity gate refuses it with the figures and writes nothing.
    """
    settings, uris = trained
    with pytest.raises(UserError, match=r"the openvino export .* does not match the model: max abs diff"):
        export_model(uris["mlp-ov"], "intel-nuc-openvino", tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_jetson_is_checked_on_the_cpu_provider_and_says_so(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, uris = trained
    with pytest.raises(UserError, match="fp32 only"):  # jetson-orin is fp16
        export_model(uris["logistic"], "jetson-orin", tmp_path / "out", settings)


@pytest.mark.parametrize(
    ("family", "profile", "message"),
    [
        ("random_forest", "intel-nuc-openvino", "OpenVINO cannot run random_forest models"),
        ("logistic", "intel-nuc-openvino", "OpenVINO cannot run logistic models"),
        ("mlp", "intel-nuc-openvino", "computes row features from timestamps"),
        ("logistic", "arm64-rpi4", "wants int8; this edgeml exports fp32 only"),
        ("logistic", "no-such-device", "unknown firmware profile 'no-such-device'"),
        ("hist_gradient_boosting", "x86-64-generic", "hist_gradient_boosting model cannot be converted"),
    ],
)
def test_refusals_name_the_problem_and_write_nothing(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path, family: str, profile: str, message: str
) -> None:
    settings, uris = trained
    with pytest.raises(UserError, match=message):
        export_model(uris[family], profile, tmp_path / "out", settings)
    assert not (tmp_path / "out").exists()


def test_a_model_over_the_size_limit_is_refused(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, uris = trained
    folder = settings.home / "firmware-profiles"
    folder.mkdir(exist_ok=True)
    tiny = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "firmware-profiles" / "x86-64-generic.yaml").read_text()
    )
    tiny.update(name="tiny-device", max_bundle_size="10KB")
    (folder / "tiny-device.yaml").write_text(yaml.safe_dump(tiny))
    try:
        with pytest.raises(UserError, match="takes at most 10,000"):
            export_model(uris["random_forest"], "tiny-device", tmp_path / "out", settings)
    finally:
        (folder / "tiny-device.yaml").unlink()


def test_unknown_model_uri(trained: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    settings, _ = trained
    with pytest.raises(UserError, match="cannot load models:/nope/1"):
        export_model("models:/nope/1", "x86-64-generic", tmp_path / "out", settings)
    with pytest.raises(UserError, match="must look like models:/NAME@ALIAS"):
        export_model("runs:/abc/model", "x86-64-generic", tmp_path / "out", settings)


def test_cli(
    trained: tuple[Settings, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, uris = trained
    monkeypatch.setenv("EDGEML_HOME", str(settings.home))
    assert (
        main(["export", uris["logistic"], "--profile", "x86-64-generic", "--out", str(tmp_path / "o")]) == 0
    )
    out = capsys.readouterr().out
    assert "parity" in out
    assert "latency" in out
    assert main(["export", uris["random_forest"], "--profile", "intel-nuc-openvino"]) == 2
    assert "OpenVINO cannot run random_forest" in capsys.readouterr().err
