"""The CLI as a user meets it: exit codes, messages on the right stream, help for every option."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

from edgeml.cli import app, main
from edgeml.demo import example_specs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "pump-faults.yaml"
BAD_SPEC = """\
name: Pump Faults
sources:
  - {name: s, kind: mqtt, broker: "mqtt://h:1883", topics: ["a/b"], qoss: 1}
schema:
  columns:
    x: {type: float}
    y: {type: category}
target: yy
task: classification
search: {families: [random_forest], trials: 0}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _walk(command: Any, path: str = "edgeml") -> list[tuple[str, Any]]:
    found = [(path, command)]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            found.extend(_walk(sub, f"{path} {name}"))
    return found


def test_every_command_and_option_is_explained() -> None:
    missing = []
    commands = _walk(typer.main.get_command(app))
    assert len(commands) >= 12
    for path, command in commands:
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            kind = param.param_type_name
            if kind == "option" and not param.help and param.name != "help":
                missing.append(f"{path} {param.opts[0]}")
            if kind == "argument" and not getattr(param, "help", None):
                missing.append(f"{path} <{param.name}>")
    assert missing == []


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in (
        "spec",
        "store",
        "simulate",
        "ingest",
        "stream",
        "validate",
        "features",
        "train",
        "models",
        "demo",
        "version",
    ):
        assert name in out
    code, out, _ = run(capsys, "version")
    assert code == 0
    assert out.startswith("edgeml ")


def test_spec_check_valid_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "spec", "check", str(EXAMPLE))
    assert code == 0, err
    assert "spec is valid" in out
    assert "pump-faults" in out


def test_spec_check_lists_every_problem_with_its_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC)
    code, out, err = run(capsys, "spec", "check", str(bad))
    assert code == 2
    assert out == ""
    for fragment in (
        "name:",
        "sources[0].qoss: unknown key (did you mean 'qos'?)",
        "target: unknown column 'yy'",
        "search.trials: must be ≥ 1, got 0",
    ):
        assert fragment in err
    assert "Traceback" not in err


def test_spec_check_json_for_tools(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC)
    code, out, _ = run(capsys, "spec", "check", "--format", "json", str(EXAMPLE), str(bad))
    assert code == 2
    reports = json.loads(out)
    assert [r["valid"] for r in reports] == [True, False]
    paths = {i["path"] for i in reports[1]["issues"]}
    assert {"name", "sources[0].qoss", "target", "search.trials"} <= paths
    assert all(isinstance(i["line"], int) for i in reports[1]["issues"])


@pytest.mark.parametrize(
    ("content", "message"),
    [("name: [unclosed\n", "not valid YAML"), ("", "a spec is a YAML mapping"), ("- 1\n", "YAML mapping")],
)
def test_spec_check_malformed_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(content)
    code, _, err = run(capsys, "spec", "check", str(path))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_spec_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "spec", "check", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "does not exist" in err


def test_spec_schema_is_json_schema_that_accepts_the_examples(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import jsonschema
    import yaml

    out_file = tmp_path / "schema.json"
    code, _, _ = run(capsys, "spec", "schema", "--out", str(out_file))
    assert code == 0
    schema = json.loads(out_file.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in example_specs():
        jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))
    code, out, _ = run(capsys, "spec", "schema")
    assert json.loads(out) == schema


def test_spec_docs_matches_the_committed_reference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spec", "docs")
    assert code == 0
    assert out == (ROOT / "docs" / "spec.md").read_text(), "regenerate with `make docs`"


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the whole loop: ~6 min alone, longer beside another test on each core
def test_demo_runs_the_whole_loop(capsys: pytest.CaptureFixture[str], clean_env: Path) -> None:
    """The demo's shorter configuration: sensors to a bundle, then the field, drift, retraining, canary,
    promotion, report (the default fleet of pumps: every fault occurs)."""
    code, out, err = run(capsys, "demo", "--trials", "4")
    assert code == 0, err
    landed = clean_env / "store" / "landing" / "pumps" / "demo-0.csv"
    rows = list(csv.DictReader(io.StringIO(landed.read_text())))
    assert len(rows) == 9000
    assert {"ts", "machine_id", "temperature", "fault"} <= set(rows[0])
    glitched = sum(r["temperature"] == "ERR" for r in rows)
    assert glitched > 0
    assert f"9,000 rows with Ray Data: {9000 - glitched:,} into the lake, {glitched} quarantined" in out
    assert "validated 8 expectations: 0 errors" in out
    assert "vibration_mean_30" in out
    assert list((clean_env / "store" / "features" / "pump-faults").rglob("*.parquet"))
    assert "registered pump-faults v1" in out
    assert "gate f1_macro" in out
    assert (clean_env / "mlflow.db").is_file()
    for profile in ("x86-64-generic", "arm64-rpi4"):  # the spec's profiles: exported or refused, with why
        assert f"for {profile} (" in out or f"export for {profile} refused" in out
    assert "signed bundle bundles/pump-faults/1/x86-64-generic/manifest.json" in out
    assert "channel stable → pump-faults v1 (serial 1), every bundle verified" in out
    assert list((clean_env / "store" / "blobs" / "sha256").iterdir())
    assert list((clean_env / "keyring").glob("*.pub"))
    assert not list((clean_env / "device-staging").glob(".stage-*"))
    # the field: drift in line-b detected and alerted, v2 retrained to its canary, promoted, no failure
    assert "alert for line-b: " in out
    assert "v2 trained, gated, published to canary for line-b" in out
    assert "promoted; every agent on v2" in out
    assert ", 0 failed requests;" in out
    assert "agents at the end: pump-gw-a v2, pump-gw-b v2, pump-gw-c v2" in out
    report = (clean_env / "report" / "index.html").read_text()
    assert report.count("data:image/png;base64,") == 5
    assert "Rollout timeline" in report
    # v2 trained with the field's labels, joined by the agents' prediction ids, and beat v1 on them
    assert re.search(r"v2 trained with [\d,]+ labelled rows from the field \(x\d\)", out), out
    assert "field labels (" in out
    assert "champion comparison: v2 passed" in out
    assert "Champion comparison: v2 vs champion v1" in report
    assert "labelled rows from the field (dataset pump-faults.labels" in report
    # what the central node's retraining runs: with no new data it stops before training, exit 1
    snapshot = (clean_env / "store" / "catalog" / "pump-faults" / "latest.json").read_text().split('"')[3]
    spec = str(ROOT / "examples" / "pump-faults.yaml")
    args = (
        "pipeline",
        "run",
        spec,
        "--source",
        "history",
        "--since-snapshot",
        snapshot,
        "--channel",
        "canary",
    )
    code, out, _ = run(capsys, *args)
    assert code == 1
    assert f"stopped: no data since snapshot {snapshot}: nothing new to train on" in out


def test_simulate_sensors_to_file_and_store(
    capsys: pytest.CaptureFixture[str], clean_env: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "s.jsonl"
    code, _, err = run(
        capsys,
        "simulate",
        "sensors",
        "--machines",
        "3",
        "--readings",
        "20",
        "--format",
        "jsonl",
        "--out",
        str(out_file),
        "--drift",
        "temperature:offset:10:0.5:pump-001",
    )
    assert code == 0, err
    lines = out_file.read_text().splitlines()
    assert len(lines) == 60
    assert json.loads(lines[0])["machine_id"] == "pump-000"
    code, _, err = run(capsys, "simulate", "sensors", "--readings", "10", "--store-key", "landing/x.csv")
    assert code == 0, err
    assert (clean_env / "store" / "landing" / "x.csv").read_text().startswith("msg_id,ts,")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drift", "temperature:wobble:1"], "kind must be offset, scale, noise or stuck"),
        (["--drift", "humidity:offset:1"], "unknown sensor 'humidity'"),
        (["--drift", "temperature:offset:1:0.5:pump-999"], "unknown machines: pump-999"),
        (["--drift", "temperature:offset"], "SENSOR:KIND:AMOUNT"),
        ([], "exactly one of --out FILE, --store-key KEY or --mqtt URL"),
    ],
)
def test_simulate_bad_input(
    capsys: pytest.CaptureFixture[str], clean_env: Path, args: list[str], message: str
) -> None:
    code, _, err = run(capsys, "simulate", "sensors", *args)
    assert code == 2
    assert message in err


def test_store_commands_on_the_local_store(
    capsys: pytest.CaptureFixture[str], clean_env: Path, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"edge" * 1000)
    assert run(capsys, "store", "put", "a/f.bin", str(src))[0] == 0
    code, out, _ = run(capsys, "store", "ls", "a/")
    assert code == 0
    assert "a/f.bin" in out
    assert run(capsys, "store", "get", "a/f.bin", str(tmp_path / "back.bin"))[0] == 0
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    code, out, _ = run(capsys, "store", "check")
    assert code == 0
    assert "write, read, verify and delete all work" in out
    assert run(capsys, "store", "rm", "a/f.bin")[0] == 0
    code, _, err = run(capsys, "store", "cat", "a/f.bin")
    assert code == 2 or code == 1
    assert "no object 'a/f.bin'" in err


def test_user_errors_exit_2_without_traceback_unless_debug(
    capsys: pytest.CaptureFixture[str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEML_STORE_URL", "gopher://x")
    code, _, err = run(capsys, "store", "ls")
    assert code == 2
    assert "unknown scheme 'gopher'" in err
    assert "hint:" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "--debug", "store", "ls")
    assert code == 2
    assert "Traceback" in err


def test_bad_setting_in_env_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEML_S3_SECURE", "perhaps")
    code, _, err = run(capsys, "store", "ls")
    assert code == 2
    assert "EDGEML_S3_SECURE" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "spec", "check", "--format", "xml", str(EXAMPLE))
    assert code == 2
    assert "xml" in err


def test_console_script_is_installed_and_exits_2_on_a_bad_spec(tmp_path: Path) -> None:
    exe = shutil.which("edgeml", path=str(Path(sys.executable).parent))
    assert exe is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_SPEC)
    proc = subprocess.run(
        [exe, "spec", "check", str(bad)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert "search.trials" in proc.stderr
