"""A spec's retention ages its model's telemetry and labels out of the central node sooner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.conftest import with_golden
from bundle.conftest import make_manifest, write_model
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.keys import export_public, init_keys, load_signer
from edgeml.central.services.targets import TargetResolver
from edgeml.store.local import LocalStore
from edgeml.telemetry.db.store import DuckDBStore
from edgeml.telemetry.schema import CompactResult, FeedbackItem

from .batches import make_batch


def test_a_models_shorter_retention_deletes_its_rows_and_labels_only(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with DuckDBStore(tmp_path / "t.duckdb", retention_days=30) as store:
        for model in ("pump", "fan"):
            store.ingest(make_batch(f"dev-{model}", model=model, window_end=now - timedelta(days=1)))
            store.add_feedback([FeedbackItem(prediction_id=f"p-{model}", label="ok", model=model)], "admin")
        store.add_feedback([FeedbackItem(prediction_id="p-none", label="ok")], "admin")
        kept = store.ingest(make_batch("dev-pump", model="pump", window_end=now + timedelta(days=5)))

        later = now + timedelta(days=7, minutes=1)  # pump's labels are 7 days old, its first window 8
        assert store.compact(later, {"pump": 7, "fan": 90}) == CompactResult(batches=1, feedback=1)
        assert sorted((b.model, b.batch_id == kept.ack.batch_id) for b in store.batches()) == [
            ("fan", False),
            ("pump", True),
        ]
        assert sorted(r.prediction_id for r in store.feedback()) == ["p-fan", "p-none"]
        # a model period longer than the node's keeps nothing longer: the node's 30 days still apply
        assert store.compact(now + timedelta(days=31), {"fan": 90}) == CompactResult(batches=1, feedback=2)
        assert [b.batch_id for b in store.batches()] == [kept.ack.batch_id]


def test_the_node_takes_each_models_period_from_its_signed_manifests(tmp_path: Path) -> None:
    home, ring = tmp_path / "publisher", tmp_path / "keyring"
    init_keys(home)
    export_public(home, ring)
    store, signer = LocalStore(tmp_path / "store"), load_signer(home)
    for version, days in ((1, 60), (2, 14)):
        folder = tmp_path / f"build-{version}"
        manifest = with_golden(make_manifest(write_model(folder, version), version, model="pump"), folder)
        publish_bundle(store, signer, manifest.model_copy(update={"retention_days": days}), folder)
    resolver = TargetResolver(store, ring, 0)
    assert resolver.retention() == {}  # nothing read yet: the node's own period
    for version in (1, 2):
        assert resolver.manifest("pump", version, "x86-64-generic") is not None
    assert resolver.retention() == {"pump": 14}  # the strictest of the versions it serves
