"""NannyML's reference rows, published with a bundle: signed next to the manifest, read back and verified
by the central node, refused when tampered with, never written where compliance bars row samples, and
invisible to devices. The slow tests build bundles of trained models with ``edgeml bundle build``'s
own function and run NannyML on what it published."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgeml.agent.runtime import ModelRuntime
from edgeml.bundle.build import BuildResult, build_bundle, publish_bundle
from edgeml.bundle.keys import KeyRing, Signer, export_public, init_keys, load_signer
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.reference_rows import (
    MAX_REFERENCE_ROWS,
    REFERENCE_CHUNKS,
    publish_reference_rows,
    reference_frame,
    reference_rows_key,
    sample_reference_rows,
)
from edgeml.bundle.verify import fetch_bundle
from edgeml.central.config import NannyMLConfig
from edgeml.central.performance import StoredReferenceRows, nannyml_analysis
from edgeml.errors import NoReferenceRows
from edgeml.export.run import load_kept_artifacts
from edgeml.settings import Settings, load_settings
from edgeml.store import store_from_settings
from edgeml.store.base import ObjectStore
from edgeml.train.data import load_training_data
from edgeml.train.run import train
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict

from .conftest import local_ray, make_manifest, write_model

PROFILE = "x86-64-generic"


@pytest.fixture
def keyring(signer: Signer, tmp_path: Path) -> Path:
    """The central node's key ring folder: the signer's public key."""
    export_public(tmp_path / "publisher", tmp_path / "keyring")
    return tmp_path / "keyring"


def _small_bundle(
    folder: Path, compliance: str = "none"
) -> tuple[Manifest, pd.DataFrame, pd.DataFrame | None]:
    """The small test model (a regressor on a, b), its manifest, and 300 holdout rows' reference frame."""
    manifest = make_manifest(write_model(folder, seed=0)).model_copy(update={"compliance": compliance})
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    target = pd.Series(rng.normal(size=300), name="__target__")
    return manifest, rows, reference_frame(ModelRuntime(folder, manifest), manifest, rows, target)


def test_the_central_node_reads_the_rows_where_they_are_published() -> None:
    assert reference_rows_key("pump", 3, PROFILE) == "bundles/pump/3/x86-64-generic/reference.parquet"


def test_published_rows_are_signed_read_back_and_invisible_to_devices(
    store: ObjectStore, signer: Signer, ring: KeyRing, keyring: Path, tmp_path: Path
) -> None:
    manifest, rows, frame = _small_bundle(tmp_path / "build")
    assert frame is not None
    # the predictions are the staged model's: y = sum([a, b] @ W)
    outputs = ModelRuntime(tmp_path / "build", manifest).predict_records(rows.to_dict("records"))
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), outputs["variable"].ravel())
    assert list(frame.columns) == ["a", "b", "prediction", "target"]

    result = publish_bundle(store, signer, manifest, tmp_path / "build", frame)
    read = StoredReferenceRows(store, keyring)(result.manifest)
    pd.testing.assert_frame_equal(read, frame)
    report = nannyml_analysis(read, read.iloc[:100].drop(columns="target"), result.manifest)
    assert report.performance is not None
    assert report.performance.estimator == "DLE"
    # devices fetch and verify the bundle as ever: the rows are not among its files
    staged = fetch_bundle(store, result.key, ring, tmp_path / "staging")
    assert sorted(p.name for p in staged.path.iterdir()) == [
        "manifest.json",
        "manifest.json.sig",
        "model.onnx",
        "model.onnx.data",
    ]


def test_a_bundle_holds_ten_chunks_of_the_sample_the_central_node_analyses_by_default() -> None:
    assert MAX_REFERENCE_ROWS == REFERENCE_CHUNKS * NannyMLConfig().max_rows == 50_000
    rows = pd.DataFrame({"t": np.arange(120_000)})
    picked = sample_reference_rows(rows)
    assert len(picked) == MAX_REFERENCE_ROWS
    assert picked["t"].is_monotonic_increasing  # a time-split holdout stays in time order
    assert picked["t"].nunique() == MAX_REFERENCE_ROWS
    assert picked["t"].iloc[0] < 100  # spread over the whole holdout
    assert picked["t"].iloc[-1] > 119_900
    pd.testing.assert_frame_equal(sample_reference_rows(rows), picked)  # the same rows every build
    assert len(sample_reference_rows(rows.head(6000))) == 6000  # a smaller holdout: all of it


def test_outputs_for_many_rows_are_the_runtimes_row_by_row(tmp_path: Path) -> None:
    """Fed as columns in batches, missing values included, the outputs are what a device's
    per-request path gives: 20,000 rows make three batches."""
    manifest = make_manifest(write_model(tmp_path, seed=0))
    runtime = ModelRuntime(tmp_path, manifest)
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"a": rng.normal(size=20_000), "b": rng.normal(size=20_000)})
    rows.loc[rng.choice(20_000, 500, replace=False), "b"] = np.nan
    frame = reference_frame(runtime, manifest, rows, pd.Series(rng.normal(size=20_000)))
    assert frame is not None
    records = [{"a": a, "b": None if np.isnan(b) else b} for a, b in zip(rows["a"], rows["b"], strict=True)]
    one_by_one = np.concatenate([runtime.predict_records([r])["variable"].ravel() for r in records[:300]])
    np.testing.assert_array_equal(frame["prediction"].to_numpy()[:300], one_by_one)
    np.testing.assert_array_equal(
        frame["prediction"].to_numpy(), runtime.predict_records(records)["variable"].ravel()
    )
    assert frame["b"].isna().sum() == 500


def test_tampered_rows_are_refused(store: ObjectStore, signer: Signer, keyring: Path, tmp_path: Path) -> None:
    manifest, _, frame = _small_bundle(tmp_path / "build")
    assert frame is not None
    result = publish_bundle(store, signer, manifest, tmp_path / "build", frame)
    key = reference_rows_key(manifest.model, manifest.version, manifest.profile)
    forged = frame.assign(target=frame["prediction"])  # rows that would make any drift look fine
    forged.to_parquet(tmp_path / "forged.parquet", index=False)
    store.put(key, (tmp_path / "forged.parquet").read_bytes())
    with pytest.raises(NoReferenceRows, match=f"reference rows {key} refused: the signature does not match"):
        StoredReferenceRows(store, keyring)(result.manifest)


def test_no_rows_where_compliance_bars_samples(store: ObjectStore, signer: Signer, tmp_path: Path) -> None:
    manifest, rows, frame = _small_bundle(tmp_path / "build", compliance="gdpr")
    assert frame is None
    with pytest.raises(ValueError, match="compliance 'gdpr': no rows leave"):
        publish_reference_rows(store, signer, manifest, rows.assign(prediction=0.0, target=0.0))
    assert not store.exists(reference_rows_key(manifest.model, manifest.version, manifest.profile))


# --- bundles of trained models, as `edgeml bundle build` makes them ------------------------------


@dataclass
class Trained:
    settings: Settings
    signer: Signer
    keyring: Path
    uris: dict[str, str]  # compliance -> models:/ URI


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """The fault classifier (a small random forest, one trial), trained under compliance none and gdpr."""
    home = tmp_path_factory.mktemp("reference-rows-home")
    (home / "specs").mkdir()
    settings = load_settings({"EDGEML_HOME": str(home)})
    init_keys(home)
    export_public(home, home / "keyring")
    frame = simulate_frame(machines=4, readings=1000)
    uris = {}
    with local_ray():
        for compliance in ("none", "gdpr"):
            data = faults_spec(f"faults-{compliance}", families=["random_forest"], trials=1, scheduler="fifo")
            data["search"]["space"] = {
                "random_forest": {"n_estimators": {"low": 20, "high": 30, "int": True}}
            }
            data["gates"], data["compliance"] = {}, compliance
            spec = spec_from_dict(data, home / "specs")
            report = train(spec, settings, make_snapshot(spec, settings, frame))
            uris[compliance] = f"models:/{report.model}/{report.version}"
        yield Trained(settings, load_signer(home), home / "keyring", uris)


def _build(trained: Trained, compliance: str) -> tuple[BuildResult, ObjectStore]:
    store = store_from_settings(trained.settings)
    return build_bundle(trained.uris[compliance], PROFILE, trained.settings, store, trained.signer), store


@pytest.mark.slow
def test_a_built_bundle_carries_rows_nannyml_runs_on(trained: Trained, tmp_path: Path) -> None:
    result, store = _build(trained, "none")
    manifest = result.manifest
    labels = manifest.outputs.labels
    assert labels is not None
    frame = StoredReferenceRows(store, trained.keyring)(manifest)
    inputs = [f.name for f in manifest.inputs]
    assert "operator" not in inputs  # the spec's pii column
    assert list(frame.columns) == [*inputs, "prediction", *(f"probability:{lb}" for lb in labels), "target"]
    # the holdout split of the snapshot the version trained on: all of it, fewer than MAX_REFERENCE_ROWS
    spec, _ = load_kept_artifacts(manifest.mlflow_run_id, tmp_path)
    holdout = load_training_data(spec, trained.settings, manifest.snapshot)
    assert len(frame) == len(holdout.X_hold) < MAX_REFERENCE_ROWS
    expected = holdout.X_hold[inputs].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame[inputs], expected, check_dtype=False)
    assert frame["target"].tolist() == [str(y) for y in holdout.y_hold]
    proba = frame[[f"probability:{lb}" for lb in labels]].to_numpy()
    assert (frame["prediction"] == np.asarray(labels)[proba.argmax(axis=1)]).all()
    assert set(frame["target"]) <= set(labels)
    # the golden samples and the rows come from the same runtime: the golden inputs' outputs agree
    golden = pd.DataFrame(manifest.golden.inputs)
    matched = golden.merge(frame.drop_duplicates(inputs), on=inputs, how="left")
    expected = np.asarray(manifest.golden.outputs["probabilities"])
    np.testing.assert_allclose(matched[[f"probability:{lb}" for lb in labels]].to_numpy(), expected)

    # a slice of the reference, as a device would sample it (no target), is no drift and no alarm
    analysis = frame.sample(n=len(frame) // 3, random_state=0).drop(columns="target")
    report = nannyml_analysis(frame, analysis, manifest)
    assert report.rows == len(analysis)
    assert {d.feature for d in report.drift} >= {"temperature", "vibration", "pressure"}
    assert not [d.feature for d in report.drift if d.alert]
    assert report.performance is not None
    assert report.performance.estimator == "CBPE"
    assert not report.performance.alert


@pytest.mark.slow
def test_a_built_bundle_under_gdpr_publishes_no_rows(trained: Trained) -> None:
    result, store = _build(trained, "gdpr")
    assert result.manifest.compliance == "gdpr"
    key = reference_rows_key(result.manifest.model, result.manifest.version, PROFILE)
    assert store.exists(result.key)
    assert not store.exists(key)
    assert not store.exists(key + ".sig")
