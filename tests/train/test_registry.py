"""SOX: an alias moved onto a version that failed its gates is a gate override: a reason, audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.cli import main
from edgeml.settings import Settings
from edgeml.store import store_from_settings


def _registry(tmp_path: Path) -> str:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("pumps")
    for gates in ("passed", "failed"):
        version = client.create_model_version("pumps", source=str(tmp_path / "model"))
        client.set_model_version_tag("pumps", version.version, "gates", gates)
    return uri


@pytest.mark.slow
def test_promoting_past_a_failed_gate_needs_a_reason_and_is_audited_as_an_override(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _registry(tmp_path)
    assert main(["models", "promote", "pumps", "1", "--tracking-uri", uri]) == 0  # passed: a plain move
    assert main(["models", "promote", "pumps", "2", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "pumps v2 failed its quality gates" in err
    assert "--reason" in err
    assert main(["models", "promote", "pumps", "2", "--tracking-uri", uri, "--reason", "CAB-7: hotfix"]) == 0

    log = AuditLog(store_from_settings(settings))
    moves = [(e.action, e.subject, e.before, e.after, e.reason) for e in log.entries()]
    assert moves == [
        ("registry.alias", "pumps@champion", None, {"version": "1"}, ""),
        ("gate.override", "pumps@champion", {"version": "1"}, {"version": "2"}, "CAB-7: hotfix"),
    ]
    assert log.verify() == []
