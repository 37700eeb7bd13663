"""``edgeml train`` and ``edgeml models`` as a user meets them: exit codes, gate lines, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeml.cli import main
from edgeml.settings import Settings

from .conftest import TrainHome
from .helpers import cheap_faults, faults_spec, make_snapshot, simulate_frame, spec_from_dict


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_train_prints_the_gates_and_models_lists_the_version(
    capsys: pytest.CaptureFixture[str], train_env: TrainHome
) -> None:
    spec = spec_from_dict(cheap_faults("faults-cli"), train_env.specs)
    make_snapshot(spec, train_env.settings, simulate_frame())
    code, out, err = run(capsys, "train", str(train_env.specs / "faults-cli.yaml"), "--trials", "2")
    assert code == 0, err
    assert "best of 2 trials, time split" in out
    assert re.search(r"gate f1_macro threshold: pass — f1_macro 0\.\d{4} within bounds", out)
    assert "faults-cli v1 is now the challenger" in out
    assert "confusion_matrix.png" in out

    code, out, err = run(capsys, "models", "list", "faults-cli")
    assert code == 0, err
    assert "model faults-cli" in out
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("1 "))
    assert "challenger" in row
    assert "passed" in row

    code, _, err = run(capsys, "models", "list", "no-such-model")
    assert code == 2
    assert "no registered model named 'no-such-model'" in err

    code, _, err = run(capsys, "models", "promote", "faults-cli", "7")
    assert code == 2
    assert "cannot promote faults-cli 7" in err
    assert "Traceback" not in err

    # every alias move is on the audit trail: the challenger by training, the champion by promote
    code, out, err = run(capsys, "models", "promote", "faults-cli", "--reason", "CAB-42 approved")
    assert code == 0, err
    assert "faults-cli@champion → v1" in out
    from edgeml.audit import AuditLog
    from edgeml.store import store_from_settings

    log = AuditLog(store_from_settings(train_env.settings))
    moves = [e for e in log.entries() if e.action == "registry.alias" and e.subject.startswith("faults-cli@")]
    # training: the challenger, and the champion (the first version to pass its gates); then promote
    assert [(e.subject, e.after) for e in moves] == [
        ("faults-cli@challenger", {"version": "1"}),
        ("faults-cli@champion", {"version": "1"}),
        ("faults-cli@champion", {"version": "1"}),
    ]
    assert "f1_macro threshold" in moves[0].reason
    assert moves[-1].reason == "CAB-42 approved"
    assert moves[-1].actor.startswith("cli:")
    assert log.verify() == []


def test_train_on_one_class_exits_2_with_the_message(
    capsys: pytest.CaptureFixture[str], clean_env: Path, settings: Settings, tmp_path: Path
) -> None:
    spec = spec_from_dict(faults_spec("one-class"), tmp_path)
    make_snapshot(spec, settings, simulate_frame().assign(fault="ok", is_anomaly=False))
    code, out, err = run(capsys, "train", str(tmp_path / "one-class.yaml"), "--trials", "2")
    assert code == 2
    assert "error: target 'fault' has one class only ('ok'); a classifier needs two or more" in err
    assert "Traceback" not in err
    assert "internal error" not in err
    assert "is now the challenger" not in out
