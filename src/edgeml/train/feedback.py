"""The field's labelled rows (dataset ``<model>.labels``, landed by the central node) in training.

Weighting: a labelled row is ground truth on the data devices see now, so it counts
:data:`LABELLED_WEIGHT` times in the training split (repeated: every model family takes it),
but the labelled copies never make more than :data:`MAX_LABELLED_SHARE` of the training rows
(beyond that, each counts less, down to once). A stable fifth of the labelled rows (by a hash
of the prediction id, so the same rows every run) is kept out of training as the *field
holdout*: the champion and the challenger are both scored on it, beside the snapshot's holdout.
A prediction id labelled more than once counts with its latest label. The families that stream
every snapshot row (medium/large ``data_volume``) take the weighted copies once per pass, beside
the stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from edgeml.errors import UserError
from edgeml.ingest.labels import LABEL, LABELLED_AT, PREDICTION_ID, labels_dataset
from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.privacy.access import record_read
from edgeml.spec.models import Spec
from edgeml.store.base import ObjectStore
from edgeml.train.data import TrainingData, model_inputs

__all__ = ["LABELLED_WEIGHT", "MAX_LABELLED_SHARE", "FieldLabels", "with_field_labels"]

#: how many training rows one labelled row counts as
LABELLED_WEIGHT = 3
#: the labelled copies' largest share of the training rows
MAX_LABELLED_SHARE = 0.5
#: one labelled row in this many (by prediction id) is the field holdout
FIELD_HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class FieldLabels:
    """What training took from the field: rows, copies added to training, and the field holdout."""

    snapshot: str | None
    rows: int
    trained: int  # labelled rows in the training split
    weight: int  # copies of each
    X_hold: pd.DataFrame | None = None
    y_hold: np.ndarray | None = None

    @property
    def held(self) -> int:
        return 0 if self.X_hold is None else len(self.X_hold)


def _held_out(prediction_id: str) -> bool:
    return int(hashlib.sha256(prediction_id.encode()).hexdigest()[:8], 16) % FIELD_HOLDOUT_EVERY == 0


def _targets(spec: Spec, labels: pd.Series) -> np.ndarray:
    values = labels.map(json.loads)
    if spec.task == "regression":
        out = values.astype("float64").to_numpy()
    elif spec.task == "anomaly":
        out = values.astype(bool).astype(np.int64).to_numpy()
    else:
        out = values.astype(str).to_numpy()
    return np.asarray(out)


def with_field_labels(spec: Spec, store: ObjectStore, data: TrainingData) -> tuple[TrainingData, FieldLabels]:
    """``data`` with the field's labelled rows added to its training split (see the module docstring)."""
    snaps = list_snapshots(store, labels_dataset(spec.name))
    if not snaps or spec.target is None:
        return data, FieldLabels(None, 0, 0, 0)
    snapshot = snaps[-1]
    record_read(store, spec, "lake", snapshot.id, len(snapshot.parts), dataset=labels_dataset(spec.name))
    frame = read_parts(store, snapshot.parts).to_pandas()
    if frame.empty:
        return data, FieldLabels(snapshot.id, 0, 0, 0)
    frame = frame.sort_values(LABELLED_AT).drop_duplicates(PREDICTION_ID, keep="last").reset_index(drop=True)
    layout = data.layout
    for name in layout.columns:
        if name not in frame.columns:  # an input the compliance mode kept on the device
            frame[name] = None
    for name in layout.time:  # devices send timestamps as epoch seconds
        if pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = pd.to_datetime(frame[name], unit="s", utc=True)
    try:
        X = model_inputs(frame, layout)
        y = _targets(spec, frame[LABEL])
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"the labelled rows of {snapshot.dataset} do not fit {spec.name}'s target: {exc}"
        ) from exc
    if data.labels is not None and spec.task != "anomaly":
        known = np.isin(y, data.labels)  # a class training never saw cannot be learned from a few labels
        X, y, frame = X[known], y[known], frame[known]
    held = frame[PREDICTION_ID].map(_held_out).to_numpy()
    X_train, y_train = X[~held], y[~held]
    n = len(X_train)
    weight = LABELLED_WEIGHT
    while weight > 1 and n * weight > MAX_LABELLED_SHARE * (len(data.X_train) + n * weight):
        weight -= 1
    if n and data.y_train is not None:
        copies = pd.concat([X_train] * weight, ignore_index=True), np.concatenate([y_train] * weight)
        data = replace(
            data,
            X_train=pd.concat([data.X_train, copies[0]], ignore_index=True),
            y_train=np.concatenate([data.y_train, copies[1]]),
            field_train=copies,
        )
    field = FieldLabels(
        snapshot.id,
        rows=len(frame),
        trained=n,
        weight=weight if n else 0,
        X_hold=X[held].reset_index(drop=True) if held.any() else None,
        y_hold=y[held] if held.any() else None,
    )
    return data, field
