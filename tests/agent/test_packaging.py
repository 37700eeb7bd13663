"""A device's install into a clean venv: light dependencies only, and the agent runs from it.

The device installs the wheel's edge extra with requirements-edge.lock as constraints, as the
Ansible role and the agent image do: the versions the whole suite ran with, nothing heavier.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import DeviceConfig, Publisher

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: what a device must never have to install
HEAVY = {
    "ray",
    "torch",
    "mlflow",
    "duckdb",
    "nannyml",
    "pandas",
    "pyarrow",
    "scikit-learn",
    "openvino",
    "onnx",
}


def test_the_edge_extra_installs_light_and_runs_the_agent(
    publisher: Publisher, device_config: DeviceConfig, tmp_path: Path
) -> None:
    # build from a copy: an in-tree build would leave build/ in the repository
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("edgeml-*.whl"))
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    lock = ROOT / "requirements-edge.lock"
    # the lock's versions as constraints, without hashes (as the Ansible role writes them): hashes
    # would put pip in hash-checking mode, which wants an == pin on the wheel itself
    constraints = tmp_path / "constraints.txt"
    lines = [ln.replace(" \\", "") for ln in lock.read_text().splitlines() if "--hash=" not in ln]
    constraints.write_text("\n".join(lines) + "\n")
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(constraints), f"{wheel}[edge]"], check=True, timeout=900
    )
    subprocess.run([*pip, "check"], check=True, timeout=60)
    listed = subprocess.run(
        [*pip, "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert installed.isdisjoint(HEAVY), installed & HEAVY
    assert {"onnxruntime", "numpy", "edgeml"} <= installed

    publisher.release(1)
    config = device_config()
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    proc = subprocess.Popen(
        [str(venv / "bin" / "edgeml"), "agent", "run", "--config", str(path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on" in line, proc.stderr.read() if proc.stderr else line
        url = line.split("serving on ")[1].strip()
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=url, timeout=5) as client:
            while client.get("/v2/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "the agent never became ready"
                time.sleep(0.2)
            answer = client.post("/predict", json={"a": 1.0, "b": 2.0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "agent stopped" in err
