"""Firmware profiles: the shipped ones are valid; operators add their own; bad ones are explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.profiles import FirmwareProfile, get_profile, load_profiles

SHIPPED = {"x86-64-generic", "arm64-rpi4", "intel-nuc-openvino", "intel-nuc-openvino-int8", "jetson-orin"}
ROOT = Path(__file__).resolve().parents[1]


def test_shipped_profiles_load_and_match_the_repository_folder() -> None:
    profiles = load_profiles()
    assert set(profiles) >= SHIPPED
    on_disk = {p.stem for p in (ROOT / "firmware-profiles").glob("*.yaml")}
    assert on_disk == set(profiles)
    assert profiles["jetson-orin"].verified is False
    assert profiles["x86-64-generic"].runtime == "onnxruntime"
    assert profiles["intel-nuc-openvino"].runtime == "openvino"
    assert profiles["arm64-rpi4"].precision == "int8"
    assert profiles["x86-64-generic"].max_bundle_size == 64_000_000


def test_tolerances_follow_the_precision() -> None:
    profiles = load_profiles()
    assert profiles["x86-64-generic"].tolerance.max_abs_diff == 1e-4
    assert profiles["jetson-orin"].tolerance.max_abs_diff > profiles["x86-64-generic"].tolerance.max_abs_diff


def _valid() -> dict[str, object]:
    return yaml.safe_load((ROOT / "firmware-profiles" / "x86-64-generic.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runtime": "tensorflow"}, "runtime"),
        ({"execution_provider": "CPU"}, "execution_provider 'CPU' is not one onnxruntime offers"),
        ({"opset": 30}, "opset 30 is outside"),
        ({"opset": 9}, "opset 9 is outside"),
        ({"precision": "int4"}, "precision"),
        ({"max_bundle_size": "lots"}, "max_bundle_size"),
        ({"threads": 0}, "threads"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_profiles_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FirmwareProfile.model_validate({**_valid(), **change})


def test_operator_profiles_add_and_override(tmp_path: Path) -> None:
    folder = tmp_path / "firmware-profiles"
    folder.mkdir()
    mine = {**_valid(), "name": "factory-gateway", "threads": 1}
    (folder / "factory-gateway.yaml").write_text(yaml.safe_dump(mine))
    (folder / "x86-64-generic.yaml").write_text(yaml.safe_dump({**_valid(), "threads": 8}))
    profiles = load_profiles(tmp_path)
    assert profiles["factory-gateway"].threads == 1
    assert profiles["x86-64-generic"].threads == 8
    (folder / "broken.yaml").write_text(yaml.safe_dump({**_valid(), "name": "broken", "opset": 99}))
    with pytest.raises(UserError, match=r"broken.yaml is invalid: opset 99"):
        load_profiles(tmp_path)


def test_a_file_must_be_named_after_its_profile(tmp_path: Path) -> None:
    folder = tmp_path / "firmware-profiles"
    folder.mkdir()
    (folder / "other.yaml").write_text(yaml.safe_dump(_valid()))
    with pytest.raises(UserError, match=r"name the file x86-64-generic\.yaml"):
        load_profiles(tmp_path)


def test_unknown_profile_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown firmware profile 'nope'; known: arm64-rpi4"):
        get_profile("nope")


def test_cli(capsys: pytest.CaptureFixture[str], clean_env: Path) -> None:
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED)
    assert main(["profiles", "show", "jetson-orin"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["verified"] is False
    assert shown["parity"]["max_abs_diff"] == 0.01
    assert main(["profiles", "show", "nope"]) == 2
    assert "unknown firmware profile" in capsys.readouterr().err
