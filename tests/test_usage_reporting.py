"""The appliance phones no one: Ray's usage stats, MLflow's telemetry and OpenVINO/NNCF's Google
Analytics are off in every process the CLI starts (edgeml._thirdparty), unless the operator chose
otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: what each library itself says about reporting, in a fresh process
_PROBE = """
import json, sys
if sys.argv[1] == "cli":
    from edgeml.cli import main
    main(["--version"])
from mlflow.telemetry.utils import is_telemetry_disabled
from ray._common.usage.usage_lib import usage_stats_enabled
from nncf.telemetry.wrapper import NNCFTelemetry
print(json.dumps({
    "mlflow_reports": not is_telemetry_disabled(),
    "ray_reports": usage_stats_enabled(),
    "nncf_reports": NNCFTelemetry()._impl.consent,
}))
"""

#: variables by which the libraries guess they run in CI or tests, and go quiet on their own
_CI_HINTS = ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "JENKINS_URL", "TF_BUILD", "GITLAB_CI")


def _probe(how: str, home: Path, **env: str) -> dict[str, bool]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in _CI_HINTS
        and k not in ("RAY_USAGE_STATS_ENABLED", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, how],
        env={**clean, "HOME": str(home), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_every_library_reports_by_default_and_not_once_the_cli_ran(tmp_path: Path) -> None:
    bare = _probe("bare", tmp_path / "bare")
    assert bare == {"mlflow_reports": True, "ray_reports": True, "nncf_reports": True}  # what is fixed

    home = tmp_path / "home"
    assert _probe("cli", home) == {"mlflow_reports": False, "ray_reports": False, "nncf_reports": False}
    assert (home / "intel" / "openvino_telemetry").read_text(encoding="utf-8") == "0"  # its own opt-out


def test_an_operators_own_choice_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "intel").mkdir(parents=True)
    (home / "intel" / "openvino_telemetry").write_text("1", encoding="utf-8")  # opted in
    chosen = _probe(
        "cli", home, MLFLOW_DISABLE_TELEMETRY="false", RAY_USAGE_STATS_ENABLED="1", DO_NOT_TRACK="0"
    )
    assert chosen == {"mlflow_reports": True, "ray_reports": True, "nncf_reports": True}
    assert (home / "intel" / "openvino_telemetry").read_text(encoding="utf-8") == "1"
