"""``edgeml bundle build`` signs the drift bands: a trained model's bundle carries them for its inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bundle.conftest import local_ray
from bundle.test_reference_rows import PROFILE, Trained, _build, trained  # noqa: F401 (trained: a fixture)
from edgeml.bundle.build import build_bundle
from edgeml.bundle.manifest import CategoryCounts, Histogram
from edgeml.drift.reference import LADDER
from edgeml.features.build import build_features
from edgeml.ingest.lake import Part, load_snapshot, record_source_parts, take_snapshot
from edgeml.ingest.run import land_batch
from edgeml.settings import Settings
from edgeml.spec import Spec
from edgeml.store import store_from_settings
from edgeml.train.run import train
from edgeml.validate import validate
from train.helpers import faults_spec, simulate_frame, spec_from_dict


@pytest.mark.slow
def test_a_built_bundle_signs_bins_and_bands_for_every_input(trained: Trained) -> None:  # noqa: F811
    result, _ = _build(trained, "none")
    manifest = result.manifest
    drift = manifest.reference.drift
    assert drift is not None
    inputs = {f.name: f.kind for f in manifest.inputs if f.kind != "time"}  # a time feeds row features only
    assert set(drift.features) == set(inputs) == set(manifest.reference.features)
    assert drift.chunk_size == max(50, min(5000, manifest.reference.rows // 10))
    assert [b.chunk_size for b in drift.smaller] == [s for s in LADDER if s < drift.chunk_size]
    for name, band in drift.features.items():
        assert band.method == "js"
        assert band.upper is not None
        assert band.upper > 0
        assert band.chunks >= 10
        hist = manifest.reference.features[name]
        if inputs[name] == "categorical":
            assert isinstance(hist, CategoryCounts)
        else:
            assert isinstance(hist, Histogram)
            assert hist.counts[0] == hist.counts[-1] == 0  # doane edges span the reference: none outside
            assert np.all(np.diff(hist.edges) > 0)


def _land_more(spec: Spec, settings: Settings, frame: pd.DataFrame) -> str:
    """Land the source again with ``frame`` added, as a re-ingest does: old rows and new ones share
    parts (one per date), none of them the old parts; the new snapshot."""
    source = spec.sources[0].name
    frame = pd.concat([simulate_frame(machines=4, readings=1000), frame], ignore_index=True)  # the fixture's
    meta = land_batch(
        frame,
        schema=spec.schema_,
        dataset=spec.name,
        source=source,
        timestamp=spec.schema_.timestamp,
        store_url=settings.store_url,
        s3=settings.store.s3,
    )
    parts = [
        Part(str(r.key), str(r.sha256), int(r.rows), int(r.bytes), source, str(r.date))
        for r in meta.itertuples(index=False)
        if r.kind == "clean"
    ]
    store = store_from_settings(settings)
    record_source_parts(store, spec.name, source, parts, append=False)
    snapshot = take_snapshot(store, spec)
    validate(spec, settings, snapshot.id)
    build_features(spec, settings, snapshot.id)
    return snapshot.id


@pytest.mark.slow
def test_a_version_trained_for_a_group_signs_that_groups_own_reference(trained: Trained) -> None:  # noqa: F811
    """Retrained for line-b on the drifted rows landed since: line-b's reference is those rows,
    every other group's the rows before, both on bins spanning all of them."""
    settings = trained.settings
    store = store_from_settings(settings)
    before = load_snapshot(store, "faults-none").id
    data = faults_spec("faults-none", families=["random_forest"], trials=1, scheduler="fifo")
    data["search"]["space"] = {"random_forest": {"n_estimators": {"low": 20, "high": 30, "int": True}}}
    data["gates"], data["compliance"] = {}, "none"
    spec = spec_from_dict(data, settings.home / "specs")
    drifted = simulate_frame(machines=2, readings=1000)  # the same pumps, 15 degC hotter
    drifted["machine_id"] = "pump-1" + drifted["machine_id"].str[-2:]
    drifted["msg_id"] = "line-b-" + drifted["msg_id"]
    drifted["temperature"] += 15.0
    after = _land_more(spec, settings, drifted)
    with local_ray():
        report = train(spec, settings, after)
    built = build_bundle(
        f"models:/{report.model}/{report.version}",
        PROFILE,
        settings,
        store,
        trained.signer,
        groups=["line-b"],
        since_snapshot=before,
    )
    ref = built.manifest.reference
    assert list(ref.groups) == ["line-b"]
    own = ref.groups["line-b"]
    assert own.rows == len(drifted)
    assert f"since snapshot {before}" in own.source
    assert ref.rows == load_snapshot(store, "faults-none", before).rows
    old_keys = {p.key for p in load_snapshot(store, "faults-none", before).parts}
    assert not old_keys & {p.key for p in load_snapshot(store, "faults-none", after).parts}
    for name, hist in ref.features.items():
        mine = own.features[name]
        assert sum(mine.counts) + mine.missing == own.rows
        if isinstance(hist, Histogram):
            assert isinstance(mine, Histogram)
            assert mine.edges == hist.edges  # the agent bins on one set of edges for every group
    temperature, theirs = own.features["temperature"], ref.features["temperature"]
    assert isinstance(temperature, Histogram)
    assert isinstance(theirs, Histogram)
    edges = np.asarray(temperature.edges)
    centre = lambda h: float(np.average(edges[:-1], weights=h.counts[1:-1]))  # noqa: E731
    assert centre(temperature) > centre(theirs) + 10  # line-b's rows are the +15 degC ones
    assert own.drift.features["temperature"].upper is not None
    # without groups (a plain build of the same version): one reference, as before
    plain = build_bundle(f"models:/{report.model}/{report.version}", PROFILE, settings, store, trained.signer)
    assert plain.manifest.reference.groups == {}
    assert plain.manifest.reference.rows == len(drifted) + ref.rows
