"""Erasure and published bundles: under gdpr and hipaa a signed manifest's golden rows are synthesised,
so no bundle holds a subject's row; under none they are holdout rows, and ``data erase`` names the
published manifests whose golden rows are the subject's (signed: found, never rewritten)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bundle.conftest import make_manifest, write_model
from edgeml.audit import AuditLog
from edgeml.bundle.build import _golden_rows, publish_bundle
from edgeml.bundle.keys import init_keys, load_signer
from edgeml.bundle.manifest import Golden, manifest_key
from edgeml.cli import main
from edgeml.settings import Settings
from edgeml.store import store_from_settings
from edgeml.train.data import load_training_data, model_inputs
from edgeml.train.pipeline import input_layout
from edgeml.train.run import TARGET_COLUMN
from privacy.test_erase import ANA, _frame, _spec
from train.helpers import make_snapshot

pytestmark = pytest.mark.slow  # a snapshot and training data: ~25 s

PROFILE = "x86-64-generic"


def test_golden_rows_are_nobodys_under_gdpr_and_erasure_names_the_bundles_that_hold_a_subjects_row(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, compliance="none")
    frame = _frame(readings=400)
    frame.loc[frame["operator"] == ANA, "rpm"] = 1234.5  # Ana's rows, findable by an input
    data = load_training_data(spec, settings, make_snapshot(spec, settings, frame))
    layout = input_layout(spec)
    rows = data.X_hold[layout.columns].assign(**{TARGET_COLUMN: data.y_hold})
    seen = model_inputs(pd.concat([data.X_train, data.X_val, data.X_hold]), layout)[layout.columns]
    store = store_from_settings(settings)
    init_keys(tmp_path / "publisher")
    signer = load_signer(tmp_path / "publisher")
    golden = {}
    for version, compliance in ((1, "none"), (2, "gdpr"), (3, "hipaa")):
        golden[compliance] = _golden_rows(_spec(tmp_path, compliance=compliance), rows, seen, layout)
        folder = tmp_path / f"build-{version}"
        manifest = make_manifest(
            write_model(folder, version), version, model=spec.name, compliance=compliance
        )
        manifest = manifest.model_copy(
            update={"golden": Golden(inputs=golden[compliance], outputs={}, tolerance=0)}
        )
        publish_bundle(store, signer, manifest, folder)

    # gdpr, hipaa: every golden row synthesised — no row the model saw, no float it saw
    everyone = set(seen.itertuples(index=False, name=None))
    floats = [n for n in layout.columns if seen[n].dtype.kind == "f"]
    for compliance in ("gdpr", "hipaa"):
        made = pd.DataFrame(golden[compliance])[layout.columns]
        assert len(made) == 8
        assert not set(made.itertuples(index=False, name=None)) & everyone
        for name in floats:
            assert not set(made[name].dropna().round(6)) & set(seen[name].dropna().round(6)), name
    # none: holdout rows, some of them Ana's
    ana = sum(r["rpm"] == 1234.5 for r in golden["none"])
    assert ana > 0

    signed = {k: store.get(k) for k in store.keys("bundles/")}
    argv = ["data", "erase", str(tmp_path / "erase-pumps.yaml"), "--where", f"operator = '{ANA}'"]
    assert main([*argv, "--reason", "DSR-11"]) == 0
    out = capsys.readouterr().out
    v1 = manifest_key(spec.name, 1, PROFILE)
    assert "published bundles: 1 signed manifests hold erased rows in their golden samples" in out
    assert f"  {v1}: {ana} golden rows" in out
    assert manifest_key(spec.name, 2, PROFILE) not in out
    assert manifest_key(spec.name, 3, PROFILE) not in out
    assert {k: store.get(k) for k in store.keys("bundles/")} == signed  # signed: left as they were
    entry = next(e for e in AuditLog(store).entries() if e.action == "data.erase")
    assert entry.after["published_bundles"] == {v1: ana}
