"""No value of a pii column leaves the lake in what a bundle publishes, under any compliance mode.

The slow test trains a real model whose spec has a pii column read by a row feature (it enters the
graph raw) and aggregated by a window feature, builds the bundle with ``edgeml bundle build``'s own
function, and looks for every raw value in every object published except the model graph itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeml.agent.runtime import ModelRuntime
from edgeml.audit import AuditLog
from edgeml.bundle.build import BuildResult, build_bundle
from edgeml.bundle.keys import KeyRing, init_keys, load_signer
from edgeml.bundle.pii import MASK_PREFIX, pii_inputs, synthesise_golden
from edgeml.bundle.reference_rows import reference_rows_key
from edgeml.bundle.verify import fetch_bundle
from edgeml.settings import Settings, load_settings
from edgeml.store import store_from_settings
from edgeml.store.base import ObjectStore
from edgeml.train.run import train
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict

from .conftest import local_ray

PROFILE = "x86-64-generic"


def _salary_spec(name: str, compliance: str = "none") -> dict[str, object]:
    data = faults_spec(name, families=["random_forest"], trials=1, scheduler="fifo")
    data["search"]["space"] = {"random_forest": {"n_estimators": {"low": 10, "high": 12, "int": True}}}
    data["gates"], data["compliance"] = {}, compliance
    data["schema"]["columns"]["salary"] = {"type": "float", "pii": True, "min": 0, "max": 500000}
    data["features"]["row"].append({"name": "salary_k", "expr": "salary / 1000"})
    data["features"]["window"].append({"name": "salary_lag_1", "column": "salary", "agg": "lag", "lag": 1})
    return data


def test_pii_inputs_are_pii_columns_and_windows_over_them(tmp_path: Path) -> None:
    spec = spec_from_dict(_salary_spec("pay"), tmp_path)
    inputs = ["temperature", "salary", "salary_lag_1", "vibration_mean_30", "ts"]
    assert pii_inputs(spec, inputs) == {"salary", "salary_lag_1"}


def test_synthesised_values_are_never_seen_and_stay_in_range() -> None:
    rng = np.random.default_rng(1)
    seen = pd.DataFrame({"age": rng.integers(18, 30, size=500).astype(float), "name": ["x"] * 500})
    records = [{"age": float(a), "name": "alice", "t": 1.5} for a in seen["age"].head(8)] + [{"age": None}]
    out = synthesise_golden(records, {"age", "name"}, seen, {"age": (20.0, None)})
    ages = [r["age"] for r in out[:8]]
    assert not set(ages) & set(seen["age"])
    assert all(20.0 <= a <= 29.0 for a in ages)
    assert [r["name"] for r in out[:8]] == [f"{MASK_PREFIX}{i}" for i in range(8)]
    assert out[0]["t"] == 1.5  # not pii: kept
    assert out[8]["age"] is None  # a missing value stays missing


# --- a real bundle ----------------------------------------------------------------------------


@dataclass
class Built:
    settings: Settings
    store: ObjectStore
    ring: KeyRing
    result: BuildResult
    salaries: pd.Series


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    home = tmp_path_factory.mktemp("pii-home")
    (home / "specs").mkdir()
    settings = load_settings({"EDGEML_HOME": str(home)})
    init_keys(home)
    signer = load_signer(home)
    frame = simulate_frame(machines=3, readings=400)
    # distinctive values: any of them found in a published object is a leak
    frame["salary"] = np.round(np.random.default_rng(3).uniform(30_000, 90_000, size=len(frame)), 2)
    spec = spec_from_dict(_salary_spec("pay-faults"), home / "specs")
    with local_ray():
        report = train(spec, settings, make_snapshot(spec, settings, frame))
    store = store_from_settings(settings)
    result = build_bundle(f"models:/{report.model}/{report.version}", PROFILE, settings, store, signer)
    ring = KeyRing({signer.key_id: signer.private.public_key()})
    return Built(settings, store, ring, result, frame["salary"])


def _texts(value: float) -> set[bytes]:
    return {repr(value).encode(), f"{value:.2f}".encode(), repr(value / 1000).encode()}


@pytest.mark.slow
def test_no_raw_pii_value_in_anything_a_bundle_publishes(built: Built, tmp_path: Path) -> None:
    manifest = built.result.manifest
    model_files = {f.sha256 for f in manifest.files if f.path.startswith("model.onnx")}
    published = list(built.store.keys(f"bundles/{manifest.model}/"))
    published += [k for k in built.store.keys("blobs/") if k.rsplit("/", 1)[-1] not in model_files]
    assert built.result.key in published
    assert reference_rows_key(manifest.model, manifest.version, PROFILE) in published  # compliance none
    needles = set().union(*(_texts(float(v)) for v in built.salaries.unique()))
    for key in published:
        data = built.store.get(key)
        leaked = [n for n in needles if n in data]
        assert not leaked, f"{key} holds raw salaries: {leaked[:3]}"

    # what makes it so: flagged, no histogram, synthesised golden values
    fields = {f.name: f for f in manifest.inputs}
    assert fields["salary"].pii
    assert fields["salary_lag_1"].pii
    assert not fields["temperature"].pii
    assert "salary" not in manifest.reference.features
    assert "salary_lag_1" not in manifest.reference.features
    assert "temperature" in manifest.reference.features
    golden = {r[name] for r in manifest.golden.inputs for name in ("salary", "salary_lag_1")}
    assert not golden & set(built.salaries)
    stored = json.loads(built.store.get(built.result.key))
    assert stored["golden"] == manifest.model_dump(mode="json")["golden"]


@pytest.mark.slow
def test_parity_still_holds_on_the_synthesised_golden_rows(built: Built, tmp_path: Path) -> None:
    staged = fetch_bundle(built.store, built.result.key, built.ring, tmp_path / "staging")
    manifest = built.result.manifest
    outputs = ModelRuntime(staged.path, manifest).predict_records(manifest.golden.inputs)
    assert "probabilities" in manifest.golden.outputs
    for name, expected in manifest.golden.outputs.items():
        got, want = np.asarray(outputs[name]), np.asarray(expected)
        if want.dtype.kind in "US":  # labels
            assert got.astype(str).tolist() == want.tolist()
        else:
            np.testing.assert_allclose(got, want, atol=manifest.golden.tolerance)


@pytest.mark.slow
def test_the_build_is_on_the_audit_trail_with_its_spec_and_key(built: Built) -> None:
    manifest = built.result.manifest
    entries = AuditLog(built.store).entries()
    actions = [(e.action, e.subject) for e in entries]
    # init_keys outside `edgeml keys`, as `pipeline run` does: recorded at the key's first signature
    assert actions == [
        ("registry.alias", f"{manifest.model}@challenger"),  # training set the challenger
        ("registry.alias", f"{manifest.model}@champion"),  # and, the first to pass its gates, the champion
        ("keys.create", manifest.key_id),
        ("spec.change", manifest.model),
        ("bundle.build", f"{manifest.model}/{manifest.version}/{PROFILE}"),
    ]
    build = entries[-1].after
    assert isinstance(build, dict)
    assert build["spec_fingerprint"] == entries[3].after
    assert build["key_id"] == manifest.key_id
    assert build["snapshot"] == manifest.snapshot
