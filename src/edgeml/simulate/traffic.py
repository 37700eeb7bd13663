"""Simulated readings as prediction requests: a gateway in front of a device, for demos and tests.

Readings become model inputs the way the device's MQTT mode makes them: window features
per entity from the data layer's :class:`~edgeml.features.window.OnlineWindows`, timestamps
as epoch seconds. :func:`send` posts them to an agent's ``/predict`` in small batches and
keeps every answer's version, the (prediction, truth) pairs for realized accuracy and the
prediction id of each, which labels refer to.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeml.agent.predlog import row_ids
from edgeml.bundle.manifest import Manifest
from edgeml.features.window import OnlineWindows
from edgeml.simulate.sensors import Columns

__all__ = ["TrafficResult", "readings_to_records", "send"]


def _epoch(value: Any) -> float:
    return float(np.datetime64(value, "ms").astype("int64")) / 1000.0


def readings_to_records(columns: Columns, manifest: Manifest) -> list[dict[str, Any]]:
    """One request record per reading, with the manifest's window features computed online."""
    names = [f.name for f in manifest.inputs]
    times = {f.name for f in manifest.inputs if f.kind == "time"}
    spec = manifest.windows
    windows = OnlineWindows(spec.features) if spec else None
    entity_col = spec.entity if spec and spec.entity else None
    ts_col = spec.timestamp if spec else None
    n = len(next(iter(columns.values())))
    records = []
    for i in range(n):
        row = {k: v[i] for k, v in columns.items()}
        values = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for name in times:
            values[name] = _epoch(row[name])
        if windows is not None and ts_col is not None:
            entity = values.get(entity_col) if entity_col else None
            values |= windows.update(
                entity, _epoch(row[ts_col]), {f.column: values.get(f.column) for f in windows.features}
            )
        records.append(
            {
                k: (None if isinstance(values.get(k), float) and np.isnan(values[k]) else values.get(k))
                for k in names
            }
        )
    return records


@dataclass
class TrafficResult:
    requests: int = 0
    rows: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter[int] = field(default_factory=Counter)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (predicted label, true label)
    pair_versions: list[int] = field(default_factory=list)  # the model version behind each pair
    prediction_ids: list[str] = field(default_factory=list)  # the id each pair's label refers to


def send(
    client: Any, records: Sequence[dict[str, Any]], truth: Sequence[Any] | None = None, *, batch: int = 32
) -> TrafficResult:
    """POST the records to ``client`` (an httpx client on an agent's URL) ``batch`` at a time."""
    result = TrafficResult()
    for start in range(0, len(records), batch):
        chunk = list(records[start : start + batch])
        response = client.post("/predict", json={"records": chunk})
        result.requests += 1
        if response.status_code != 200:
            result.failures.append(f"{response.status_code}: {response.text[:200]}")
            continue
        answer = response.json()
        result.rows += len(chunk)
        result.versions[int(answer["version"])] += len(chunk)
        if truth is not None:
            result.prediction_ids += row_ids(str(answer["id"]), len(chunk))
            for prediction, label in zip(answer["predictions"], truth[start : start + batch], strict=True):
                predicted = prediction.get("label", next(iter(prediction.values())))
                result.pairs.append((str(predicted), str(label)))
                result.pair_versions.append(int(answer["version"]))
    return result
