"""The live path judges as ``edgeml drift run`` does, and a monitor round never fails as a whole.

Live: a signed bundle whose manifest carries the reference statistics and bands built from a
reference frame; the agent's telemetry window counts each analysis chunk as it serves it
(a real ONNX model); the batches go over HTTP to a running central node; its monitor pools and
judges them; ``/v1/drift`` shows per feature value, band, method and alert. Offline:
:func:`edgeml.drift.run.drift_run` on the same frames. They must give the same verdicts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from agent.conftest import Publisher, with_golden
from bundle.conftest import make_manifest, write_model
from central.conftest import ADMIN, Central, bearer, make_config, running
from conftest import free_port
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.telemetry import TelemetryBatch, TelemetryWindow
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Manifest, Reference
from edgeml.bundle.verify import fetch_bundle
from edgeml.central.monitor import Monitor
from edgeml.central.services.targets import TargetResolver
from edgeml.cli import main
from edgeml.drift.reference import build_reference, chunk_bounds
from edgeml.drift.run import drift_run
from edgeml.telemetry.db.store import DuckDBStore as TelemetryStore

CHUNK = 500


def _show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["drift", "show", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4,000 reference rows; 2,250 analysis rows, ``a`` shifted from row 1,000, a short last chunk."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"a": rng.normal(size=4000), "b": rng.gamma(2.0, size=4000)})
    analysis = pd.DataFrame(
        {
            "a": np.concatenate([rng.normal(size=1000), rng.normal(0.4, 1.0, size=1250)]),
            "b": rng.gamma(2.0, size=2250),
        }
    )
    return reference, analysis


def _published(
    publisher: Publisher, tmp_path: Path, reference: pd.DataFrame, version: int = 1
) -> LoadedModel:
    histograms, thresholds = build_reference(reference, CHUNK)
    signed = Reference(rows=len(reference), source="test", features=histograms, scores={}, drift=thresholds)
    folder = tmp_path / f"build-{version}"
    manifest = make_manifest(write_model(folder, version), version).model_copy(update={"reference": signed})
    manifest = with_golden(manifest, folder)
    result = publish_bundle(publisher.store, publisher.signer, manifest, folder)
    ring = KeyRing.from_dir(publisher.ring)
    staged = fetch_bundle(publisher.store, result.key, ring, tmp_path / f"staging-{version}")
    return LoadedModel(staged.path, staged.manifest)


def _served(model: LoadedModel, device: str, group: str, rows: pd.DataFrame) -> list[TelemetryBatch]:
    """What the agent's telemetry window reports for serving ``rows`` in requests of 50."""
    window = TelemetryWindow(device, group=group, window_rows=100_000)
    holder = ModelHolder()
    holder.watch(window)
    for j in range(0, len(rows), 50):
        columns = {n: rows[n].to_numpy(np.float64)[j : j + 50] for n in ("a", "b")}
        holder.observe(model, columns, model.predict(columns), 0.001)
    return window.flush()


def _post_chunks(central: Central, model: LoadedModel, analysis: pd.DataFrame) -> None:
    """Each chunk served by its own device in its own group: one pooled window per chunk."""
    for i, (start, stop) in enumerate(chunk_bounds(len(analysis), CHUNK)):
        token = central.register(f"dev-{i}", group=f"chunk-{i}", model="pump")
        for batch in _served(model, f"dev-{i}", f"chunk-{i}", analysis.iloc[start:stop]):
            answer = central.post(batch, token)
            assert answer.status_code in (200, 202), answer.text


@pytest.mark.slow
def test_the_live_path_gives_the_verdicts_of_drift_run(
    publisher: Publisher, tmp_path: Path, capsys: pytest.CaptureFixture[str], wide_console: None
) -> None:
    reference, analysis = _frames()
    model = _published(publisher, tmp_path, reference)
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False},
    )
    with running(config) as central:
        _post_chunks(central, model, analysis)
        monitor = Monitor(
            central.store, central.app.state.central.targets.manifest, window=timedelta(minutes=5), min_rows=1
        )
        central.app.state.central.monitor = monitor  # what /v1/drift reads
        monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
        view = central.client.get("/v1/drift", headers=bearer(ADMIN)).json()
        url = str(central.client.base_url)
        shown = _show(capsys, "pump", "--central", url, "--token", ADMIN, "--group", "chunk-3")
        everything = _show(capsys, "pump", "--central", url, "--since", "1h")
        other = _show(capsys, "other-model", "--central", url)
    assert other[:2] == (0, "no drift verdicts for other-model\n")
    assert shown[0] == 0
    assert "chunk-3" in shown[1]
    assert "chunk-2" not in shown[1]
    assert "ALERT" in shown[1]
    assert everything[0] == 0
    assert all(f"chunk-{i}" in everything[1] for i in range(5))
    live = {s["group"]: {f["feature"]: f for f in s["features"]} for s in view["latest"]}
    offline = drift_run(reference, analysis, CHUNK)
    assert len(live) == len(offline.chunks) == 5
    for chunk in offline.chunks:
        shown = live[f"chunk-{chunk.index}"]
        for v in chunk.features:
            assert shown[v.feature]["method"] == v.method == "js"
            assert shown[v.feature]["value"] == pytest.approx(v.value, rel=1e-12)
            assert shown[v.feature]["upper"] == pytest.approx(v.upper, rel=1e-12)
            assert shown[v.feature]["lower"] is v.lower is None
            assert shown[v.feature]["alert"] is v.alert
            assert shown[v.feature]["rows"] == v.rows == chunk.stop - chunk.start
    alerts = [(c.index, v.feature) for c in offline.chunks for v in c.features if v.alert]
    assert {(2, "a"), (3, "a")} <= set(alerts)  # the shift is seen, live as offline
    assert view["failures"] == []


class _LandingStore(TelemetryStore):
    """A real store where a batch of another version lands while the round's pools are summed."""

    landing: ClassVar[list[TelemetryBatch]] = []

    def pooled_windows(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        while self.landing:
            self.ingest(self.landing.pop())
        return super().pooled_windows(*args, **kwargs)


def test_a_batch_landing_mid_round_is_judged_and_a_failing_pool_is_reported_alone(
    publisher: Publisher, tmp_path: Path
) -> None:
    reference, analysis = _frames()
    v1 = _published(publisher, tmp_path, reference, 1)
    v2 = _published(publisher, tmp_path, reference, 2)
    v3 = _published(publisher, tmp_path, reference, 3)
    resolver = TargetResolver(publisher.store, publisher.ring, 5)

    def manifests(model: str, version: int, profile: str) -> Manifest | None:
        if version == 3:
            raise OSError("store unreachable")
        return resolver.manifest(model, version, profile)

    with _LandingStore(tmp_path / "telemetry.duckdb") as db:
        for device in ("d1", "d2", "d3"):
            db.register_device(
                group=f"line-{device}", profile="x86-64-generic", model="pump", device_id=device
            )
        for device, model in (("d1", v1), ("d3", v3)):
            for batch in _served(model, device, f"line-{device}", analysis.iloc[:CHUNK]):
                db.ingest(batch)
        _LandingStore.landing = _served(v2, "d2", "line-d2", analysis.iloc[:CHUNK])
        monitor = Monitor(db, manifests, window=timedelta(minutes=5), min_rows=1)
        statuses = monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
    assert sorted((s.version, s.group) for s in statuses) == [(1, "line-d1"), (2, "line-d2")]
    assert monitor.failures == {("pump", 3, "line-d3"): "OSError: store unreachable"}


def test_drift_show_says_what_went_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _show(capsys, "pump", "--central", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "is not reachable" in err
    code, _, err = _show(capsys, "pump", "--since", "yesterday")
    assert code == 2
    assert "--since 'yesterday' is neither an ISO 8601 time nor a time ago" in err
    config = make_config(tmp_path / "central", fleet_auth="admin", monitor={"enabled": False})
    with running(config) as central:
        url = str(central.client.base_url)
        code, _, err = _show(capsys, "pump", "--central", url, "--token", "wrong")
        assert code == 2
        assert "refused the token" in err
        code, _, err = _show(capsys, "pump", "--central", url, "--token", ADMIN)
        assert code == 2
        assert "does not watch drift" in err
