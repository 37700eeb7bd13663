"""The field's labelled rows in the lake: dataset ``<model>.labels``, one part and snapshot per landing.

A landed row is the inputs a device logged (within its compliance mode) and columns about it:
:data:`LABEL` (the ground truth, as JSON: a class or a number), :data:`PREDICTION_ID`,
``_version``, ``_device_id``, ``_prediction``, ``_predicted_at`` and :data:`LABELLED_AT`. A
corrected label lands again in a later part: readers keep the latest row per prediction id.
The central node lands (:mod:`edgeml.central.services.labels`); training reads
(:mod:`edgeml.train.feedback`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa

from edgeml.errors import ObjectNotFoundError
from edgeml.ingest.lake import Part, Snapshot, _put_part, record_source_parts
from edgeml.store.base import ObjectStore
from edgeml.telemetry.schema import LabelledRow

__all__ = [
    "LABEL",
    "LABELLED_AT",
    "PREDICTION_ID",
    "SOURCE",
    "labels_dataset",
    "landed_until",
    "write_labels",
]

LABEL = "_label"
PREDICTION_ID = "_prediction_id"
LABELLED_AT = "_labelled_at"
SOURCE = "feedback"


def labels_dataset(model: str) -> str:
    """The lake dataset holding ``model``'s labelled rows."""
    return f"{model}.labels"


def _watermark_key(dataset: str) -> str:
    return f"catalog/{dataset}/landed.json"


def landed_until(store: ObjectStore, model: str) -> datetime | None:
    """When the latest label landed so far arrived; None before the first landing."""
    try:
        doc = json.loads(store.get(_watermark_key(labels_dataset(model))))
    except ObjectNotFoundError:
        return None
    return datetime.fromisoformat(doc["until"])


def write_labels(store: ObjectStore, model: str, rows: Sequence[LabelledRow]) -> Snapshot:
    """Land ``rows`` (not empty) as a new part and snapshot of ``model``'s labelled dataset."""
    dataset = labels_dataset(model)
    names = sorted({name for r in rows for name in r.inputs})
    columns: dict[str, list[object]] = {name: [r.inputs.get(name) for r in rows] for name in names}
    columns |= {
        LABEL: [json.dumps(r.label) for r in rows],
        PREDICTION_ID: [r.prediction_id for r in rows],
        "_version": [r.version for r in rows],
        "_device_id": [r.device_id for r in rows],
        "_prediction": [None if r.prediction is None else json.dumps(r.prediction) for r in rows],
        "_predicted_at": [r.predicted_at for r in rows],
        LABELLED_AT: [r.labelled_at for r in rows],
    }
    today = datetime.now(UTC).date().isoformat()
    part = _put_part(store, f"lake/{dataset}/{SOURCE}/date={today}", pa.table(columns), SOURCE, today)
    snapshot = _snapshot(store, dataset, record_source_parts(store, dataset, SOURCE, [part], append=True))
    until = max(r.labelled_at for r in rows).isoformat()
    store.put(_watermark_key(dataset), json.dumps({"until": until}).encode(), content_type="application/json")
    return snapshot


def _snapshot(store: ObjectStore, dataset: str, parts: list[Part]) -> Snapshot:
    """Record ``parts`` as the dataset's newest snapshot (the layout ``edgeml data snapshots`` reads)."""
    ordered = sorted(parts, key=lambda p: p.key)
    digest = hashlib.sha256(SOURCE.encode())
    for part in ordered:
        digest.update(f"\n{part.key} {part.sha256}".encode())
    snapshot = Snapshot(
        id=digest.hexdigest()[:16],
        dataset=dataset,
        created=datetime.now(UTC).isoformat(timespec="microseconds"),
        schema_fingerprint="",  # the columns are the logged inputs, not a spec's schema
        parts=tuple(ordered),
        rows=sum(p.rows for p in ordered),
        rows_by_source={SOURCE: sum(p.rows for p in ordered)},
    )
    doc = snapshot.to_json().encode()
    store.put(f"catalog/{dataset}/snapshots/{snapshot.id}.json", doc, content_type="application/json")
    latest = json.dumps({"id": snapshot.id}).encode()
    store.put(f"catalog/{dataset}/latest.json", latest, content_type="application/json")
    return snapshot
