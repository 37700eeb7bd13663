"""``edgeml bundle build`` signs the drift bands: a trained model's bundle carries them for its inputs."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.test_reference_rows import Trained, _build, trained  # noqa: F401 (trained: a fixture)
from edgeml.bundle.manifest import CategoryCounts, Histogram
from edgeml.drift.reference import LADDER


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
