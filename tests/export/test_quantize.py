"""fp16 and int8 exports: parity within the profile's tolerance, and the accuracy gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeml.errors import UserError
from edgeml.export.run import export_model
from edgeml.profiles import load_profiles
from edgeml.settings import Settings

pytestmark = pytest.mark.slow


def test_int8_mlp_on_onnx_runtime(trained: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    settings, uris = trained
    fp32 = export_model(uris["mlp"], "x86-64-generic", tmp_path / "fp32", settings)
    report = export_model(uris["mlp"], "arm64-rpi4", tmp_path / "int8", settings)
    assert report.precision == "int8"
    assert report.parity["max_abs_diff"] <= load_profiles()["arm64-rpi4"].tolerance.max_abs_diff
    assert report.parity["label_agreement"] >= 0.98
    gate = report.quantization
    assert gate is not None
    assert gate["metric"] == "f1_macro"
    assert gate["drop"] <= gate["tolerance"] == 0.01
    assert gate["source"].startswith("training snapshot")
    assert report.size_bytes < fp32.size_bytes
    stored = json.loads((tmp_path / "int8" / "export_report.json").read_text())
    assert stored["quantization"]["native"] == gate["native"]


def test_fp16_mlp_for_jetson_is_checked_on_the_cpu_provider_and_says_so(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, uris = trained
    report = export_model(uris["mlp"], "jetson-orin", tmp_path / "out", settings)
    assert report.precision == "fp16"
    assert report.parity["max_abs_diff"] <= 1e-2
    assert report.quantization is not None
    assert report.quantization["drop"] <= 0.01
    assert report.verified_on_device_class is False
    assert any("CUDAExecutionProvider is not available" in n for n in report.notes)


def test_nncf_int8_mlp_on_openvino(trained: tuple[Settings, dict[str, str]], tmp_path: Path) -> None:
    settings, uris = trained
    report = export_model(uris["mlp-ov"], "intel-nuc-openvino-int8", tmp_path / "out", settings)
    assert report.precision == "int8"
    assert report.parity["label_agreement"] >= 0.98
    assert report.quantization is not None
    assert report.quantization["metric"] == "log_loss"
    assert report.quantization["drop"] <= 0.05
    assert "model.xml" in {f["path"] for f in report.files}


def test_the_accuracy_gate_refuses_with_both_numbers(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """NNCF's int8 costs this MLP ~1e-4 of log_loss on its holdout: over a tolerance of 1e-9."""
    settings, uris = trained
    with pytest.raises(UserError) as info:
        export_model(
            uris["mlp-ov"], "intel-nuc-openvino-int8", tmp_path / "out", settings, quantization_tolerance=1e-9
        )
    message = info.value.message
    assert "the int8 export of faults-mlp-ov v1 loses too much on the holdout rows" in message
    assert "log_loss native 0." in message
    assert "exported 0." in message
    assert "allowed 1e-09" in message
    assert not (tmp_path / "out").exists()


def test_a_forest_under_an_int8_profile_stays_fp32_and_says_why(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, uris = trained
    report = export_model(uris["random_forest"], "arm64-rpi4", tmp_path / "out", settings)
    assert (report.precision, report.profile_precision) == ("fp32", "int8")
    assert report.parity["max_abs_diff"] <= 1e-4
    assert report.quantization is None
    assert any("random_forest model has none" in n for n in report.notes)


@pytest.mark.parametrize("profile", sorted(load_profiles()))
def test_every_shipped_profile_exports_the_mlp_or_refuses_clearly(
    trained: tuple[Settings, dict[str, str]], tmp_path: Path, profile: str
) -> None:
    settings, uris = trained
    report = export_model(uris["mlp-ov"], profile, tmp_path / "out", settings)
    assert report.profile == profile
    assert report.latency["p50_ms"] > 0
    assert (tmp_path / "out" / "export_report.json").exists()
