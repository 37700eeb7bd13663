"""A pii input leaves the device as counts only: with no reference histogram in the manifest (the
builder gives a pii input none), a device's window sends its missing and out-of-range counts and
no histogram, in every mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.test_telemetry import classifier_manifest, feed, make_rows, only, split_sizes, write_classifier
from edgeml.agent.model import LoadedModel
from edgeml.agent.telemetry import TelemetryWindow


@pytest.mark.parametrize("compliance", ["none", "gdpr", "hipaa", "sox"])
def test_a_pii_input_without_a_reference_sends_counts_and_no_histogram(
    tmp_path: Path, compliance: str
) -> None:
    files = write_classifier(tmp_path / "model")
    manifest = classifier_manifest(files, compliance=compliance)
    features = {k: v for k, v in manifest.reference.features.items() if k != "email"}  # as built
    manifest = manifest.model_copy(
        update={"reference": manifest.reference.model_copy(update={"features": features})}
    )
    model = LoadedModel(files[0].parent, manifest)
    rows = make_rows(400, seed=5)
    rows["email"][:7] = [None] * 7
    window = TelemetryWindow("dev-1", window_rows=100_000)
    feed(window, model, rows, split_sizes(400, seed=6))
    batch = only(window.flush())
    email = batch.features["email"]
    assert email.counts == []
    assert email.edges is None
    assert email.values is None
    assert email.missing == 7
    assert "plant.example" not in batch.model_dump_json()
    assert sum(batch.features["note"].counts) > 0  # other inputs keep their histograms
