"""Landing the labelled rows that arrived since the last landing (:mod:`edgeml.ingest.labels`)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeml.ingest.labels import labels_dataset, landed_until, write_labels
from edgeml.ingest.lake import list_snapshots
from edgeml.store.base import ObjectStore
from edgeml.telemetry.store import TelemetryStore

__all__ = ["LandResult", "land_labels"]


@dataclass(frozen=True)
class LandResult:
    dataset: str
    rows: int  # landed now
    snapshot: str | None  # the dataset's newest snapshot, None if it has none


def land_labels(store: ObjectStore, db: TelemetryStore, model: str) -> LandResult:
    """Land ``model``'s labelled rows whose (latest) label arrived since the last landing."""
    dataset = labels_dataset(model)
    rows = db.labelled_rows(model, landed_until(store, model))
    if rows:
        return LandResult(dataset, len(rows), write_labels(store, model, rows).id)
    snaps = list_snapshots(store, dataset)
    return LandResult(dataset, 0, snaps[-1].id if snaps else None)
