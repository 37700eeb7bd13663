"""`edgeml export` end to end: trained models out to ONNX Runtime and OpenVINO, or refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.export.run import export_model
from edgeml.settings import Settings

pytestmark = pytest.mark.slow


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


def test_an_mlp_for_openvino_matches_in_f32(trained: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    """The CPU plugin's bf16 default and save_model's fp16 weights once moved probabilities by 0.5."""
    settings, uris = trained
    report = export_model(uris["mlp-ov"], "intel-nuc-openvino", tmp_path / "out", settings)
    assert report.parity["max_abs_diff"] <= 1e-4
    assert report.parity["label_agreement"] >= 0.999
    assert report.runtime_options == {"INFERENCE_PRECISION_HINT": "f32"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"model.xml", "model.bin", "export_report.json"}


def test_hist_gradient_boosting_runs_as_tensor_operations_on_onnx_runtime(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, uris = trained
    report = export_model(uris["hist_gradient_boosting"], "x86-64-generic", tmp_path / "out", settings)
    assert report.parity["max_abs_diff"] <= 1e-4
    assert report.parity["label_agreement"] >= 0.999


def test_a_forest_on_openvino_is_refused_naming_the_profiles_that_run_it(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """OpenVINO computes in float32 only: a value near a split goes the other way, so parity cannot hold.

    The family is refused before the inputs are looked at, so this forest's timestamp features are not
    what is refused (a numbers-only forest is refused by `spec check` in tests/test_support.py)."""
    settings, uris = trained
    with pytest.raises(UserError) as info:
        export_model(uris["random_forest"], "intel-nuc-openvino", tmp_path / "out", settings)
    message = info.value.message
    assert "intel-nuc-openvino (openvino) cannot run random_forest models" in message
    assert "float32" in message
    assert info.value.hint is not None
    assert "x86-64-generic" in info.value.hint
    assert "arm64-rpi4" in info.value.hint
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("family", "profile", "message"),
    [
        ("random_forest", "intel-nuc-openvino", "cannot run random_forest models"),
        ("logistic", "intel-nuc-openvino", "cannot run logistic models"),
        ("logistic", "intel-nuc-openvino-int8", "cannot run logistic models"),
        ("mlp", "intel-nuc-openvino", "timestamp inputs, which intel-nuc-openvino cannot take"),
        ("logistic", "no-such-device", "unknown firmware profile 'no-such-device'"),
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
    assert main(["export", uris["logistic"], "--profile", "intel-nuc-openvino"]) == 2
    assert "cannot run logistic models" in capsys.readouterr().err
