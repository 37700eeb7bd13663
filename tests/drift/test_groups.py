"""A version trained for a device group judges that group by the group's own reference.

v2 is trained on the old rows and a drifted group's new rows. Its bins span both; the version's
reference counts the old rows on them, and ``reference.groups`` the group's rows. Served by
agents in three groups and judged by a running central node: the group v2 was trained for is
back at baseline on its drifted data, another group on normal data is too, and a group that
drifts the same way but was not trained for still alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.conftest import Publisher, with_golden
from bundle.conftest import make_manifest, write_model
from central.conftest import ADMIN, bearer, make_config, running
from drift.test_live import CHUNK, _served
from edgeml.agent.model import LoadedModel
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import GroupReference, Histogram, Reference
from edgeml.bundle.verify import fetch_bundle
from edgeml.central.monitor import Monitor
from edgeml.drift.judge import band_for, judge
from edgeml.drift.reference import build_reference, recount


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": rng.normal(shift, 1.0, size=n), "b": rng.gamma(2.0, size=n)})


def _group_version(publisher: Publisher, tmp_path: Path, old: pd.DataFrame, new: pd.DataFrame) -> LoadedModel:
    """v2: bins over every training row, the version's reference on the old rows, line-b's on the new."""
    bins, methods = build_reference(pd.concat([old, new], ignore_index=True), CHUNK)
    features, drift = recount(old, bins, methods, CHUNK)
    group_features, group_drift = recount(new, bins, methods, CHUNK)
    signed = Reference(
        rows=len(old),
        source="test: old rows",
        features=features,
        scores={},
        drift=drift,
        groups={
            "line-b": GroupReference(
                rows=len(new), source="test: line-b rows", features=group_features, drift=group_drift
            )
        },
    )
    folder = tmp_path / "build-2"
    manifest = make_manifest(write_model(folder, 2), 2).model_copy(update={"reference": signed})
    manifest = with_golden(manifest, folder)
    result = publish_bundle(publisher.store, publisher.signer, manifest, folder)
    staged = fetch_bundle(publisher.store, result.key, KeyRing.from_dir(publisher.ring), tmp_path / "staging")
    return LoadedModel(staged.path, staged.manifest)


def test_recount_counts_on_the_given_bins_with_bands_from_the_rows_own_chunks() -> None:
    rng = np.random.default_rng(1)
    old, new = _rows(rng, 4000), _rows(rng, 3000, shift=3.0)
    bins, methods = build_reference(pd.concat([old, new], ignore_index=True), CHUNK)
    features, drift = recount(new, bins, methods, CHUNK)
    for name in ("a", "b"):
        got, spanning = features[name], bins[name]
        assert isinstance(got, Histogram)
        assert isinstance(spanning, Histogram)
        assert got.edges == spanning.edges
        assert sum(got.counts) + got.missing == len(new)
        assert drift.features[name].method == methods.features[name].method
        assert drift.features[name].chunks == len(new) // CHUNK
    # the shifted rows' own chunks: one of them is no drift against the group's reference,
    # and clear drift against the old rows'
    old_features, old_drift = recount(old, bins, methods, CHUNK)
    chunk = _rows(rng, CHUNK, shift=3.0)
    counts, _ = recount(chunk, bins, methods, CHUNK)
    own = band_for(drift, "a", CHUNK)
    other = band_for(old_drift, "a", CHUNK)
    assert own is not None
    assert other is not None
    assert not judge("a", own[0], features["a"], counts["a"].counts, own[1]).alert
    assert judge("a", other[0], old_features["a"], counts["a"].counts, other[1]).alert


@pytest.mark.slow
def test_the_group_a_version_was_trained_for_returns_to_baseline_live(
    publisher: Publisher, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    old, new = _rows(rng, 4000), _rows(rng, 3000, shift=2.0)
    model = _group_version(publisher, tmp_path, old, new)
    served = {
        "line-a": _rows(rng, 1000),  # normal, as the old rows
        "line-b": _rows(rng, 1000, shift=2.0),  # drifted, as v2 was trained for
        "line-c": _rows(rng, 1000, shift=2.0),  # drifted the same way, not trained for
    }
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False},
    )
    with running(config) as central:
        for group, rows in served.items():
            device = f"gw-{group}"
            token = central.register(device, group=group, model="pump")
            for batch in _served(model, device, group, rows):
                answer = central.post(batch, token)
                assert answer.status_code in (200, 202), answer.text
        monitor = Monitor(
            central.store, central.app.state.central.targets.manifest, window=timedelta(minutes=5), min_rows=1
        )
        central.app.state.central.monitor = monitor
        monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))
        view = central.client.get("/v1/drift", headers=bearer(ADMIN)).json()
    latest = {s["group"]: s for s in view["latest"]}
    assert sorted(latest) == ["line-a", "line-b", "line-c"]
    assert {g: s["reference"] for g, s in latest.items()} == {
        "line-a": "version",
        "line-b": "group",
        "line-c": "version",
    }
    values = {g: {f["feature"]: f for f in s["features"]} for g, s in latest.items()}
    assert latest["line-a"]["drifted"] == []
    assert latest["line-b"]["drifted"] == []
    assert latest["line-c"]["drifted"] == ["a"]
    # line-b's value is its distance to its own rows: as small as line-a's to the old rows
    assert values["line-b"]["a"]["value"] < values["line-b"]["a"]["upper"]
    assert values["line-c"]["a"]["value"] > 5 * values["line-b"]["a"]["value"]
    # each band is its reference's: line-b's comes from line-b's rows, not the version's
    assert values["line-b"]["a"]["upper"] != values["line-c"]["a"]["upper"]
