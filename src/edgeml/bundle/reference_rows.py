"""Reference rows for the central node's NannyML: a version's holdout rows as its devices report rows.

Under compliance ``none`` devices send row samples (non-pii inputs, the prediction and, for
classifiers, the class probabilities), and the central node runs NannyML on them against these
rows: the same columns, computed by the exported model through the device runtime, plus the true
``target``. They are Parquet next to the manifest with a detached signature of their own, and not
among the bundle's files: devices never fetch them. Under any other compliance there are none.

The central node analyses one chunk of sampled rows against :data:`REFERENCE_CHUNKS` reference
chunks of that size, so the rows are drawn from the holdout split of the snapshot the version
trained on, up to :data:`MAX_REFERENCE_ROWS` (ten chunks of the node's default
``nannyml.max_rows``); the ~2,000 holdout rows kept with the run only stand in when that snapshot
is gone.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from edgeml.bundle.keys import Signer
from edgeml.bundle.manifest import Manifest, manifest_key
from edgeml.store.policy import REFERENCE_ROWS

if TYPE_CHECKING:
    from edgeml.agent.runtime import ModelRuntime
    from edgeml.store.base import ObjectStore

__all__ = [
    "MAX_REFERENCE_ROWS",
    "PREDICTION_COLUMN",
    "REFERENCE_CHUNKS",
    "TARGET_COLUMN",
    "probability_column",
    "publish_reference_rows",
    "reference_frame",
    "reference_rows_key",
    "sample_reference_rows",
]

#: the predicted label (classes) or value, as a device's sampled row carries it
PREDICTION_COLUMN = "prediction"
#: the true label or value
TARGET_COLUMN = "target"
#: reference chunks NannyML's thresholds come from (its default count): the central node analyses
#: at most a tenth of the reference rows
REFERENCE_CHUNKS = 10
#: reference rows published at most: ten chunks of the central node's default ``nannyml.max_rows``
#: (5,000). About 0.3 kB a row in Parquet for a dozen inputs and four classes: ~15 MB at most.
MAX_REFERENCE_ROWS = REFERENCE_CHUNKS * 5_000
#: rows the runtime is given at once (bounds the tensors of a wide model)
_BATCH_ROWS = 8_192


def probability_column(label: str) -> str:
    """The model's (uncalibrated) probability of ``label``."""
    return f"probability:{label}"


def reference_rows_key(model: str, version: int, profile: str) -> str:
    """Next to the manifest; the signature is at this key + ``.sig``."""
    return manifest_key(model, version, profile).removesuffix("manifest.json") + REFERENCE_ROWS


def sample_reference_rows(rows: pd.DataFrame, limit: int = MAX_REFERENCE_ROWS) -> pd.DataFrame:
    """At most ``limit`` of ``rows``, the same ones every build, in their order (a time-split
    holdout stays in time order, so NannyML's reference chunks are stretches of time)."""
    if len(rows) <= limit:
        return rows
    picked = np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))
    return rows.iloc[picked]


def reference_frame(
    runtime: ModelRuntime, manifest: Manifest, rows: pd.DataFrame, target: pd.Series | None
) -> pd.DataFrame | None:
    """The holdout ``rows`` and their ``target`` with the staged model's outputs; None where NannyML
    gets no rows.

    None under a compliance other than ``none`` (devices send no samples), without targets, or for a
    classifier without probabilities (CBPE needs them). Rows whose probabilities are not all finite
    are left out: a device sends those without probabilities, and CBPE refuses them.
    """
    labels = manifest.outputs.labels
    has_probabilities = "probabilities" in manifest.outputs.names
    if manifest.compliance != "none" or target is None or (labels and not has_probabilities) or rows.empty:
        return None
    sampled = [f.name for f in manifest.inputs if not f.pii]
    frame = rows[sampled].reset_index(drop=True)
    outputs = _predict(runtime, manifest, rows)
    if labels:
        proba = np.asarray(outputs["probabilities"], dtype=np.float64)
        frame[PREDICTION_COLUMN] = np.asarray(labels, dtype=object)[proba.argmax(axis=1)]
        for k, label in enumerate(labels):
            frame[probability_column(label)] = proba[:, k]
        frame[TARGET_COLUMN] = target.astype(str).to_numpy()
        return frame[np.isfinite(proba).all(axis=1)].reset_index(drop=True)
    values = np.asarray(outputs[manifest.outputs.names[0]]).ravel()
    # labels (clusters, anomaly flags) as text, as the agent reports them; values as numbers
    as_labels = values.dtype.kind in "iubUSO" or bool(manifest.reference.predictions)
    frame[PREDICTION_COLUMN] = values.astype(str) if as_labels else values.astype(np.float64)
    frame[TARGET_COLUMN] = target.astype(str).to_numpy() if as_labels else target.to_numpy(dtype=np.float64)
    return frame


def _predict(runtime: ModelRuntime, manifest: Manifest, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The runtime's outputs for ``rows`` (every input, pii ones too: a device predicts on them), fed
    as columns a batch at a time. Missing values are missing as a device feeds them: NaN, or ""."""
    columns = {f.name: _column(rows[f.name], f.dtype) for f in manifest.inputs}
    parts = [
        runtime.run(runtime.feeds({name: values[i : i + _BATCH_ROWS] for name, values in columns.items()}))
        for i in range(0, len(rows), _BATCH_ROWS)
    ]
    return {name: np.concatenate([p[name] for p in parts]) for name in runtime.output_names}


def _column(values: pd.Series, dtype: str) -> np.ndarray:
    if dtype == "string":
        return np.asarray(values.astype(object).where(values.notna(), None).to_numpy(), dtype=object)
    return np.asarray(pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))


def publish_reference_rows(
    store: ObjectStore, signer: Signer, manifest: Manifest, frame: pd.DataFrame
) -> str:
    """Write ``frame`` as Parquet and its signature; the key. Refused unless compliance allows samples."""
    if manifest.compliance != "none":
        raise ValueError(f"{manifest.model} runs under compliance {manifest.compliance!r}: no rows leave")
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    key = reference_rows_key(manifest.model, manifest.version, manifest.profile)
    # the signature first: rows found are never without theirs
    store.put(key + ".sig", signer.sign(data), content_type="application/json")
    store.put(key, data, content_type="application/vnd.apache.parquet")
    return key
