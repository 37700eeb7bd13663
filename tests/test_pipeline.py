"""``pipeline run``'s first use: the signing key it creates is on the audit trail from its creation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.bundle.keys import list_keys
from edgeml.pipeline import ensure_signer
from edgeml.settings import load_settings
from edgeml.store import store_from_settings


def test_the_key_pipeline_run_creates_is_audited_when_created(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEML_AUDIT_ACTOR", "job:retrain")
    settings = load_settings()
    signer = ensure_signer(settings)
    assert [k.key_id for k in list_keys(settings.home)] == [signer.key_id]
    entries = AuditLog(store_from_settings(settings)).entries()
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("job:retrain", "keys.create", signer.key_id)
    ]
    assert entries[0].after == {"active": signer.key_id}
    assert "pipeline run" in entries[0].reason
    # the next run finds the key: no second key, no second record
    assert ensure_signer(settings).key_id == signer.key_id
    assert len(AuditLog(store_from_settings(settings)).entries()) == 1


_MEDIUM_RUN = """
import json, sys
from pathlib import Path
from edgeml.pipeline import run_pipeline
from edgeml.settings import load_settings
from edgeml.spec.loader import parse_spec
path = Path(sys.argv[1])
spec = parse_spec(path.read_text(), source=str(path), base_dir=path.parent)
result = run_pipeline(spec, load_settings(), publication=None)
print(json.dumps({
    "converter_loaded_here": "skl2onnx" in sys.modules,
    "bundles": [b.key for b in result.bundles],
    "refused": result.refused,
}))
"""


@pytest.mark.slow
def test_medium_data_builds_bundles_in_a_child_process(clean_env: Path) -> None:
    """data_volume medium/large: export and signing run in a fresh process; the driver never loads
    the converter."""
    import json
    import subprocess
    import sys

    from bench.pipeline_memory import SPEC, write_csv

    folder = clean_env / "pumps"
    folder.mkdir()
    write_csv(folder / "readings.csv", 0.5)
    spec = SPEC.format(csv=folder / "readings.csv").replace("trials: 1}", "trials: 1, max_concurrent: 1}")
    (folder / "spec.yaml").write_text(spec, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _MEDIUM_RUN, str(folder / "spec.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["converter_loaded_here"]
    assert out["bundles"] == ["bundles/bench-pumps/1/x86-64-generic/manifest.json"]
    assert out["refused"] == {}


def test_an_error_in_the_bundle_child_comes_back_as_the_same_kind_with_its_hint(clean_env: Path) -> None:
    from edgeml.errors import UserError
    from edgeml.pipeline import _bundle_apart
    from edgeml.settings import load_settings

    settings = load_settings()  # a fresh home: the child finds no signing key
    with pytest.raises(UserError, match="no signing key in") as error:
        _bundle_apart("models:/nothing-here/1", "x86-64-generic", settings, (), None)
    assert error.value.hint == "`edgeml keys init`"
    assert error.value.exit_code == UserError.exit_code
