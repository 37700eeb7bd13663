"""Telemetry batches shaped as the store writes them: one Arrow table per stored table.

A :class:`BatchGroup` is what one write transaction of the telemetry store appends: the rows
of ``batches``, ``batch_features``, ``batch_scores`` and ``batch_labels`` for a run of
batches, with ``seq`` numbered from 0 within the group (the store offsets it as it inserts).

The central node builds groups in the process that serves HTTP, which has every batch parsed
already, and hands them to the store process, which then only inserts them: any Python work
in the store's process costs DuckDB time there (see :mod:`edgeml.telemetry.process`).
A group pickles as Arrow buffers, so handing one over costs a copy, not a parse.

A batch's ``payload`` (:func:`payload_of`) is its JSON without the histograms that
``batch_features`` and ``batch_scores`` hold: those keep only their names, in order, and
:func:`rebuilt` puts the rows back. Stored twice, the histograms made the payload ~10 kB a
batch: a third of the write, and DuckDB rewrote the growing payload column of the last row
group at its checkpoints, stalling every commit for up to seconds as the row group filled.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgeml.bundle.manifest import Histogram
from edgeml.telemetry.schema import FeatureTelemetry, TelemetryBatch

__all__ = [
    "BATCH_TYPES",
    "FEATURE_TYPES",
    "LABEL_TYPES",
    "SCORE_TYPES",
    "STAMP",
    "BatchGroup",
    "Head",
    "laid_out",
    "payload_of",
    "rebuilt",
]

#: one stored batch's parts that the device registry follows: device id, spool drops it
#: reported, window end, model, version
Head = tuple[str, int, datetime, str, int]

STAMP = pa.timestamp("us", tz="UTC")
BATCH_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "device_id": pa.string(),
    "batch_id": pa.string(),
    "model": pa.string(),
    "version": pa.int32(),
    "profile": pa.string(),
    "device_group": pa.string(),
    "window_start": STAMP,
    "window_end": STAMP,
    "row_count": pa.int64(),
    "request_count": pa.int64(),
    "errors": pa.string(),
    "dropped_before": pa.int64(),
    "calibrated_rows": pa.int64(),
    "expected_correct": pa.float64(),
    "received_at": STAMP,
    "body_sha256": pa.string(),
    "payload": pa.string(),
}
FEATURE_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "feature": pa.string(),
    "edges": pa.list_(pa.float64()),
    "categories": pa.list_(pa.string()),
    "counts": pa.list_(pa.int64()),
    "missing": pa.int64(),
    "out_of_range": pa.int64(),
}
SCORE_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "score": pa.string(),
    "edges": pa.list_(pa.float64()),
    "counts": pa.list_(pa.int64()),
    "missing": pa.int64(),
}
LABEL_TYPES: dict[str, pa.DataType] = {
    "seq": pa.int64(),
    "label": pa.string(),
    "predicted": pa.int64(),
    "calibrated_sum": pa.float64(),
}


@dataclass(frozen=True)
class BatchGroup:
    """The rows of a run of batches, all received at ``received_at``; build with :meth:`of`."""

    received_at: datetime
    batches: pa.Table
    features: pa.Table
    scores: pa.Table
    labels: pa.Table

    @classmethod
    def of(cls, items: Sequence[tuple[TelemetryBatch, str, str]], received_at: datetime) -> BatchGroup:
        """The group of ``items``: each a batch, its canonical JSON and that JSON's sha256."""
        rows = _Rows()
        for seq, (batch, payload, digest) in enumerate(items):
            rows.add(seq, batch, payload, digest, received_at)
        return cls(
            received_at,
            _table(rows.b, BATCH_TYPES),
            _table(rows.f, FEATURE_TYPES),
            _table(rows.s, SCORE_TYPES),
            _table(rows.lb, LABEL_TYPES),
        )

    @classmethod
    def joined(cls, groups: Sequence[BatchGroup]) -> BatchGroup:
        """One group of ``groups`` (each numbered from 0, as :meth:`of` builds them), in order.

        All its batches are received at the latest of the groups' ``received_at``: a
        transaction's batches share it.
        """
        if len(groups) == 1:
            return groups[0]
        received_at = max(g.received_at for g in groups)
        parts: dict[str, list[pa.Table]] = {name: [] for name in groups[0].tables()}
        offset = 0
        for group in groups:
            for name, table in group.tables().items():
                seq = pc.add(table.column("seq"), pa.scalar(offset, pa.int64()))
                parts[name].append(table.set_column(table.schema.get_field_index("seq"), "seq", seq))
            offset += len(group)
        batches = pa.concat_tables(parts["batches"])
        stamps = pa.array([received_at] * batches.num_rows, STAMP)
        batches = batches.set_column(batches.schema.get_field_index("received_at"), "received_at", stamps)
        return cls(
            received_at,
            batches,
            pa.concat_tables(parts["batch_features"]),
            pa.concat_tables(parts["batch_scores"]),
            pa.concat_tables(parts["batch_labels"]),
        )

    def __len__(self) -> int:
        rows: int = self.batches.num_rows
        return rows

    def tables(self) -> dict[str, pa.Table]:
        """The stored table each part is appended to, and the part."""
        return {
            "batches": self.batches,
            "batch_features": self.features,
            "batch_scores": self.scores,
            "batch_labels": self.labels,
        }

    def ids(self) -> list[tuple[str, str]]:
        """Each batch's idempotency key, (device id, batch id), in order."""
        return list(zip(_values(self.batches, "device_id"), _values(self.batches, "batch_id"), strict=True))

    def digests(self) -> list[str]:
        """Each batch's body sha256, in order."""
        return _values(self.batches, "body_sha256")

    def heads(self) -> list[Head]:
        """Each batch's :data:`Head`, in order."""
        names = ("device_id", "dropped_before", "window_end", "model", "version")
        return list(zip(*(_values(self.batches, n) for n in names), strict=True))

    def only(self, keep: Sequence[int]) -> BatchGroup:
        """The group of the batches at positions ``keep`` (their ``seq`` kept: gaps are harmless)."""
        kept = pa.array(keep, pa.int64())
        parts = [t.filter(pc.is_in(t.column("seq"), value_set=kept)) for t in self.tables().values()]
        return BatchGroup(self.received_at, *parts)


def laid_out(
    items: Sequence[tuple[TelemetryBatch, str, str]], received_at: datetime
) -> tuple[BatchGroup | None, dict[int, Exception]]:
    """The group of the ``items`` Arrow takes, and why each other one was refused, by position.

    A value the contract let through but Arrow refuses (a date UTC cannot hold) fails its own
    batch only: the others of the group are laid out again without it.
    """
    try:
        return BatchGroup.of(items, received_at), {}
    except Exception:  # noqa: S110 (found again below, one batch at a time)
        pass
    failed: dict[int, Exception] = {}
    for i, item in enumerate(items):
        try:
            BatchGroup.of([item], received_at)
        except Exception as exc:
            failed[i] = exc
    kept = [item for i, item in enumerate(items) if i not in failed]
    return (BatchGroup.of(kept, received_at) if kept else None), failed


#: the batch's parts whose histograms live in the child tables; the payload keeps their names
_IN_CHILD_TABLES = {"features", "scores"}


def payload_of(batch: TelemetryBatch) -> str:
    """What ``batches.payload`` stores of ``batch``: its JSON, ``features`` and ``scores`` as their names."""
    rest = batch.model_dump_json(exclude=_IN_CHILD_TABLES)
    names = json.dumps({"features": list(batch.features), "scores": list(batch.scores)})
    return f"{rest[:-1]},{names[1:]}"


def rebuilt(
    payload: str, features: dict[str, dict[str, Any]], scores: dict[str, dict[str, Any]]
) -> TelemetryBatch:
    """The batch ``payload`` was stored from, its histograms taken from ``features`` and ``scores`` by name.

    A payload written before the histograms left it holds them itself, and is read as it is.
    """
    data = json.loads(payload)
    if isinstance(data["features"], dict):
        return TelemetryBatch.model_validate_json(payload)
    # the rows were validated when the batch came in, and their columns are typed: no need again
    try:
        data["features"] = {n: FeatureTelemetry.model_construct(**features[n]) for n in data["features"]}
        data["scores"] = {n: Histogram.model_construct(**scores[n]) for n in data["scores"]}
    except KeyError as exc:
        raise ValueError(f"batch {data['batch_id']}: the stored histogram {exc} is missing") from exc
    return TelemetryBatch.model_validate(data)


def _values(table: pa.Table, column: str) -> list[Any]:
    values: list[Any] = table.column(column).to_pylist()
    return values


def _table(columns: dict[str, list[Any]], types: dict[str, pa.DataType]) -> pa.Table:
    return pa.table({name: pa.array(values, types[name]) for name, values in columns.items()})


class _Rows:
    """Column lists for a group's batches and their child rows."""

    def __init__(self) -> None:
        self.b: dict[str, list[Any]] = {name: [] for name in BATCH_TYPES}
        self.f: dict[str, list[Any]] = {name: [] for name in FEATURE_TYPES}
        self.s: dict[str, list[Any]] = {name: [] for name in SCORE_TYPES}
        self.lb: dict[str, list[Any]] = {name: [] for name in LABEL_TYPES}

    def add(self, seq: int, batch: TelemetryBatch, payload: str, digest: str, received_at: datetime) -> None:
        cal = batch.calibration
        for name, value in (
            ("seq", seq),
            ("device_id", batch.device_id),
            ("batch_id", batch.batch_id),
            ("model", batch.model),
            ("version", batch.version),
            ("profile", batch.profile),
            ("device_group", batch.group),
            # in UTC here: a time UTC cannot hold fails this batch now, not the store reading it back
            ("window_start", batch.window_start.astimezone(UTC)),
            ("window_end", batch.window_end.astimezone(UTC)),
            ("row_count", batch.rows),
            ("request_count", batch.requests),
            ("errors", json.dumps(batch.errors)),
            ("dropped_before", batch.dropped_before),
            ("calibrated_rows", cal.rows if cal else None),
            ("expected_correct", cal.expected_correct if cal else None),
            ("received_at", received_at),
            ("body_sha256", digest),
            ("payload", payload),
        ):
            self.b[name].append(value)
        f = self.f
        for feature, counts in batch.features.items():
            f["seq"].append(seq)
            f["feature"].append(feature)
            f["edges"].append(counts.edges)
            f["categories"].append(counts.values)
            f["counts"].append(counts.counts)
            f["missing"].append(counts.missing)
            f["out_of_range"].append(counts.out_of_range)
        sc = self.s
        for key, hist in batch.scores.items():
            sc["seq"].append(seq)
            sc["score"].append(key)
            sc["edges"].append(hist.edges)
            sc["counts"].append(hist.counts)
            sc["missing"].append(hist.missing)
        sums = cal.sums if cal else {}
        for label in dict.fromkeys([*batch.predictions, *sums]):
            self.lb["seq"].append(seq)
            self.lb["label"].append(label)
            self.lb["predicted"].append(batch.predictions.get(label, 0))
            self.lb["calibrated_sum"].append(sums.get(label))
