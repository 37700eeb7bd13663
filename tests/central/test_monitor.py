"""The central watch end to end: real agent telemetry from a real model, into the DuckDB store, judged
against the signed manifest's reference; the drifted group alone is flagged and handed to retraining."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from agent.conftest import Publisher, with_golden
from bundle.conftest import make_manifest, write_model
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Reference
from edgeml.bundle.reference import numeric_histogram
from edgeml.bundle.verify import fetch_bundle
from edgeml.central.monitor import GroupStatus, Monitor
from edgeml.central.services.targets import TargetResolver
from edgeml.observability import REGISTRY
from edgeml.telemetry.db.store import DuckDBStore


def _published(publisher: Publisher, tmp_path: Path) -> LoadedModel:
    """v1 with reference histograms of a, b ~ N(0, 1) over 2,000 holdout-like rows."""
    rng = np.random.default_rng(0)
    reference = Reference(
        rows=2000,
        source="test",
        features={
            "a": numeric_histogram(rng.normal(size=2000)),
            "b": numeric_histogram(rng.normal(size=2000)),
        },
        scores={},
    )
    folder = tmp_path / "build"
    manifest = make_manifest(write_model(folder, 1), 1).model_copy(update={"reference": reference})
    manifest = with_golden(manifest, folder)
    result = publish_bundle(publisher.store, publisher.signer, manifest, folder)
    staged = fetch_bundle(publisher.store, result.key, KeyRing.from_dir(publisher.ring), tmp_path / "staging")
    return LoadedModel(staged.path, staged.manifest)


def _telemetry(model: LoadedModel, device: str, group: str, shift: float, seed: int) -> list:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    window = TelemetryWindow(device, group=group, window_rows=10_000)
    holder = ModelHolder()
    holder.watch(window)
    for _ in range(30):  # 30 requests of 20 rows
        columns = {"a": np.clip(rng.normal(shift, 1, 20), -10, 10), "b": rng.normal(0, 1, 20)}
        holder.observe(model, columns, model.predict(columns), 0.001)
    return window.flush()


def test_only_the_drifted_group_is_flagged_and_handed_to_retraining(
    publisher: Publisher, tmp_path: Path
) -> None:
    model = _published(publisher, tmp_path)
    triggered: list[GroupStatus] = []
    with DuckDBStore(tmp_path / "telemetry.duckdb") as db:
        for device, group, shift, seed in (("d1", "line-a", 0.0, 1), ("d2", "line-b", 1.5, 2)):
            db.register_device(group=group, profile="x86-64-generic", model="pump", device_id=device)
            for batch in _telemetry(model, device, group, shift, seed):
                db.ingest(batch)
        monitor = Monitor(
            db,
            TargetResolver(publisher.store, publisher.ring, 5).manifest,
            window=timedelta(minutes=5),
            on_drift=triggered.append,
        )
        statuses = monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
    by_group = {s.group: s for s in statuses}
    assert set(by_group) == {"line-a", "line-b"}
    assert by_group["line-a"].drifted == []
    assert by_group["line-b"].drifted == ["a"]
    assert [s.group for s in triggered] == ["line-b"]
    assert by_group["line-b"].rows == 600
    assert by_group["line-b"].snapshot == "snap"
    assert len(monitor.history) == 1
    breach = REGISTRY.get_sample_value(
        "edgeml_drift_breach_info", {"model": "pump", "version": "1", "group": "line-b", "feature": "a"}
    )
    assert breach == 1.0
    calm = REGISTRY.get_sample_value(
        "edgeml_drift_breach_info", {"model": "pump", "version": "1", "group": "line-a", "feature": "a"}
    )
    assert calm == 0.0


def test_too_few_rows_are_not_judged(publisher: Publisher, tmp_path: Path) -> None:
    model = _published(publisher, tmp_path)
    with DuckDBStore(tmp_path / "telemetry.duckdb") as db:
        db.register_device(group="line-a", profile="x86-64-generic", model="pump", device_id="d1")
        for batch in _telemetry(model, "d1", "line-a", 5.0, 1):
            db.ingest(batch)
        monitor = Monitor(db, TargetResolver(publisher.store, publisher.ring, 5).manifest, min_rows=10_000)
        assert monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1)) == []


def test_an_unpublished_version_is_skipped(publisher: Publisher, tmp_path: Path) -> None:
    assert TargetResolver(publisher.store, publisher.ring, 5).manifest("pump", 9, "x86-64-generic") is None


def test_a_group_with_inconsistent_bins_fails_alone_and_the_others_are_judged(
    publisher: Publisher, tmp_path: Path
) -> None:
    """Bins that disagree (stored before ingest checked them) fail their own (model, version, group)."""
    model = _published(publisher, tmp_path)
    with DuckDBStore(tmp_path / "telemetry.duckdb") as db:
        for device, group, seed in (("d1", "line-a", 1), ("d2", "line-b", 2)):
            db.register_device(group=group, profile="x86-64-generic", model="pump", device_id=device)
            for batch in _telemetry(model, device, group, 0.0, seed):
                db.ingest(batch)
        odd = _telemetry(model, "d2", "line-b", 0.0, 3)[0]
        wrong = odd.features["a"].model_copy(update={"edges": [0.0], "counts": [1, 2]})
        db.ingest(odd.model_copy(update={"features": {**odd.features, "a": wrong}}))
        monitor = Monitor(
            db, TargetResolver(publisher.store, publisher.ring, 5).manifest, window=timedelta(minutes=5)
        )
        statuses = monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert [s.group for s in statuses] == ["line-a"]
    assert list(monitor.failures) == [("pump", 1, "line-b")]
