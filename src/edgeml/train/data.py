"""Training data: the feature table of a snapshot, checked and split before any trial starts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeml.errors import UserError
from edgeml.ingest.lake import Part, load_snapshot, read_parts
from edgeml.privacy.access import record_read
from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.store import ObjectStore, store_from_settings
from edgeml.train.pipeline import InputLayout, input_layout
from edgeml.train.stream import (
    BATCH_ROWS,
    HOLDOUT,
    TRAIN,
    VALIDATION,
    SplitStream,
    Splitter,
    epoch_ticks,
    order_statistics,
    part_file,
)

__all__ = ["MIN_ROWS", "TrainingData", "load_training_data", "model_inputs", "split_features", "targets"]

MIN_ROWS = 30


@dataclass
class TrainingData:
    snapshot: str
    layout: InputLayout
    X_train: pd.DataFrame
    y_train: np.ndarray | None
    X_val: pd.DataFrame
    y_val: np.ndarray | None
    X_hold: pd.DataFrame
    y_hold: np.ndarray | None
    split: str  # "time" or "stratified" or "random"
    labels: list[str] | None = None
    rows_total: int = 0  # rows of the whole feature table, when the splits are samples of it
    #: every row of the table, for the families that learn incrementally (medium/large data)
    stream: SplitStream | None = None
    #: the field's labelled training rows, weighted copies included (also inside X_train/y_train):
    #: a streamed fit takes them beside the stream, which does not hold them
    field_train: tuple[pd.DataFrame, np.ndarray] | None = None

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "validation": len(self.X_val), "holdout": len(self.X_hold)}


def _feature_table(
    store: ObjectStore, spec: Spec, settings: Settings, snapshot_id: str | None
) -> tuple[str, pd.DataFrame]:
    snapshot = load_snapshot(store, spec.name, snapshot_id)
    key = f"catalog/{spec.name}/features/{snapshot.id}.json"
    if not store.exists(key):
        from edgeml.features.build import build_features

        build_features(spec, settings, snapshot.id)  # needs a passed validation; says so if not
    doc: dict[str, Any] = json.loads(store.get(key))
    parts = [Part(**p) for p in doc["parts"]] if "parts" in doc else [Part(**doc["part"])]
    table = read_parts(store, _read_features(store, spec, snapshot.id, parts))
    return snapshot.id, table.to_pandas()


def model_inputs(frame: pd.DataFrame, layout: InputLayout) -> pd.DataFrame:
    """The columns the model takes, as it takes them (timestamps as epoch seconds)."""
    out = pd.DataFrame(index=frame.index)
    for name in layout.numeric:
        out[name] = pd.to_numeric(frame[name].astype("float64"), errors="coerce")
    for name in layout.categorical:
        out[name] = frame[name].astype(object).where(frame[name].notna(), None)
    for name in layout.text:
        out[name] = frame[name].fillna("").astype(str)
    for name in layout.time:
        ts = pd.to_datetime(frame[name], utc=True)
        out[name] = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return out


def targets(spec: Spec, values: pd.Series) -> np.ndarray:
    """The target as models learn it: class names, 0/1 for anomaly, floats for regression."""
    if spec.task in ("classification", "text-classification"):
        return np.asarray(values.astype(str).to_numpy())
    if spec.task == "anomaly":
        return np.asarray(values.astype(bool).to_numpy(), dtype=np.int64)
    return np.asarray(values.astype("float64").to_numpy(), dtype=np.float64)


def data_split_note(split: str) -> str:
    return "the split is by time: the newest rows are held out" if split == "time" else f"{split} split"


def load_training_data(spec: Spec, settings: Settings, snapshot_id: str | None = None) -> TrainingData:
    """Load a snapshot's feature table, check it and split it (see :func:`split_features`).

    With ``pipeline.data_volume`` medium or large, the whole table is never loaded: see
    :func:`sample_features`.
    """
    store = store_from_settings(settings)
    if spec.pipeline.data_volume != "small":
        snapshot, parts = _feature_parts(store, spec, settings, snapshot_id)
        frame, assigned, stream = sample_features(store, settings, spec, parts)
        data = split_features(spec, frame, snapshot, assigned)
        data.rows_total = sum(stream.rows)
        data.stream = stream
        return data
    snapshot, frame = _feature_table(store, spec, settings, snapshot_id)
    return split_features(spec, frame, snapshot)


def _read_features(store: ObjectStore, spec: Spec, snapshot: str, parts: list[Part]) -> list[Part]:
    record_read(store, spec, "features", snapshot, len(parts))
    return parts


#: a class keeps at least this many rows (or all it has) in a sampled split
MIN_ROWS_PER_CLASS = 1_000


def _feature_parts(
    store: ObjectStore, spec: Spec, settings: Settings, snapshot_id: str | None
) -> tuple[str, list[Part]]:
    snapshot = load_snapshot(store, spec.name, snapshot_id)
    key = f"catalog/{spec.name}/features/{snapshot.id}.json"
    if not store.exists(key):
        from edgeml.features.build import build_features

        build_features(spec, settings, snapshot.id)
    doc: dict[str, Any] = json.loads(store.get(key))
    parts = [Part(**p) for p in doc["parts"]] if "parts" in doc else [Part(**doc["part"])]
    return snapshot.id, _read_features(store, spec, snapshot.id, parts)


class _Classes:
    """Target values as small integer codes shared by every part (4 bytes a row, not a string)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, target: pd.Series) -> np.ndarray:
        local = pd.Categorical(target.astype(str))
        mapping = np.array([self.codes.setdefault(str(c), len(self.codes)) for c in local.categories])
        return mapping[local.codes].astype(np.int32) if len(mapping) else np.zeros(len(target), np.int32)


def _stratified(spec: Spec) -> bool:
    return spec.target is not None and spec.task in ("classification", "text-classification", "anomaly")


def sample_features(
    store: ObjectStore, settings: Settings, spec: Spec, parts: list[Part]
) -> tuple[pd.DataFrame, np.ndarray, SplitStream]:
    """A split of the whole feature table and a bounded, stratified sample of each split.

    A few passes over the parts, one batch of rows in memory at a time; no per-row list of the
    whole table is ever kept:

    1. Split every row of the snapshot (:class:`~edgeml.train.stream.Splitter`). With a
       timestamp, by time: the cut points are the exact (1 - holdout - validation) and
       (1 - holdout) quantiles of all timestamps (the newest rows are held out), found by
       counting passes over the timestamp column (:func:`~edgeml.train.stream.order_statistics`).
       Without, each row draws a uniform number from a generator seeded by ``search.seed`` and
       the part's position: reproducible, and every row is in exactly one split.
    2. Count each split's rows per class (the target's values, for classification and anomaly),
       then sample each split down to ``pipeline.sample_rows`` rows: proportional allocation,
       every class keeping at least min(its rows, 1,000, sample_rows / (10 × classes)); kept by
       a second seeded draw per row.

    Returns the sampled rows, their split (0 train, 1 validation, 2 holdout), and the stream of
    every row (its totals, and the rows themselves for the families that learn incrementally).
    """
    s, cap = spec.search, spec.pipeline.sample_rows
    ts_name = spec.schema_.timestamp
    total = sum(p.rows for p in parts)
    splitter = Splitter(s.seed, s.holdout_fraction, s.validation_fraction, ts_name)
    if ts_name is not None and total:

        def stamps() -> Iterator[np.ndarray]:
            for part in parts:
                for batch in part_file(store, part).iter_batches(BATCH_ROWS, columns=[ts_name]):
                    yield epoch_ticks(batch.column(0))

        n_hold, n_val = int(total * s.holdout_fraction), int(total * s.validation_fraction)
        cuts = order_statistics(stamps, [total - n_hold - n_val, total - n_hold])
        splitter = Splitter(s.seed, s.holdout_fraction, s.validation_fraction, ts_name, (cuts[0], cuts[1]))
    classes = _Classes()
    needed = [c for c in (ts_name, spec.target) if c is not None]

    Batch = tuple[int, pa.RecordBatch, np.ndarray, np.ndarray | None]

    def batches(columns: set[str]) -> Iterator[Batch]:
        """Each part's batches (those of ``columns`` it has) with their rows' split and class code."""
        for i, part in enumerate(parts):
            draws = splitter.draws(i)
            file = part_file(store, part)
            names = [c for c in file.schema_arrow.names if c in columns]
            for batch in file.iter_batches(BATCH_ROWS, columns=names):
                by_time = splitter.cuts is not None and ts_name is not None
                stamps = epoch_ticks(batch.column(ts_name)) if by_time else None
                split = splitter.assign(stamps, None if by_time else draws.random(batch.num_rows))
                strata = classes.encode(batch.column(spec.target).to_pandas()) if _stratified(spec) else None
                yield i, batch, split, strata

    counts: dict[tuple[int, int], int] = {}  # (split, class code) -> rows
    for _, _, split, strata in batches(set(needed)):
        pairs = split.astype(np.int64) << 32 | (strata if strata is not None else 0)
        values, n = np.unique(pairs, return_counts=True)
        for v, c in zip(values, n, strict=True):
            key = (int(v) >> 32, int(v) & 0xFFFFFFFF)
            counts[key] = counts.get(key, 0) + int(c)
    keep_p: dict[tuple[int, int], float] = {}  # (split, class code) -> probability a row is kept
    for split_id in (TRAIN, VALIDATION, HOLDOUT):
        mine = {code: n for (sp, code), n in counts.items() if sp == split_id}
        rows = sum(mine.values())
        floor = min(MIN_ROWS_PER_CLASS, cap // (10 * max(1, len(mine))))
        for code, count in mine.items():
            quota = max(min(count, floor), round(cap * count / rows)) if rows > cap else count
            keep_p[(split_id, code)] = min(1.0, quota / count)
    frames, assigned = [], []
    keeps = [np.random.default_rng([s.seed, i, 1]) for i in range(len(parts))]
    # the sampled rows, with what training reads of them (a column the table lacks is named later)
    for i, batch, split, strata in batches({*input_layout(spec).columns, *needed}):
        p = np.zeros(batch.num_rows)
        for (sp, code), prob in keep_p.items():
            p[(split == sp) & (strata == code if strata is not None else True)] = prob
        keep = keeps[i].random(batch.num_rows) < p
        if keep.any():
            frames.append(batch.filter(pa.array(keep)).to_pandas())
            assigned.append(split[keep])
    frame = pd.concat(frames, ignore_index=True) if frames else read_parts(store, parts[:1]).to_pandas()
    split_of = np.concatenate(assigned) if assigned else np.empty(0, dtype=np.int8)
    names = {code: name for name, code in classes.codes.items()}
    stream = SplitStream(
        tuple(parts),
        settings.store_url,
        settings.store.s3,
        splitter,
        (
            sum(n for (sp, _), n in counts.items() if sp == TRAIN),
            sum(n for (sp, _), n in counts.items() if sp == VALIDATION),
            sum(n for (sp, _), n in counts.items() if sp == HOLDOUT),
        ),
        {names[code]: n for (sp, code), n in counts.items() if sp == TRAIN and code in names},
    )
    return frame, split_of, stream


def split_features(
    spec: Spec, frame: pd.DataFrame, snapshot: str, assigned: np.ndarray | None = None
) -> TrainingData:
    """Check a feature table and split it. Every problem the user can fix is a UserError here,
    before any trial starts."""
    from sklearn.model_selection import train_test_split

    layout = input_layout(spec)
    missing = [c for c in layout.columns if c not in frame.columns]
    if missing:
        raise UserError(f"snapshot {snapshot} has no column {', '.join(missing)}; rebuild features")
    target = spec.target
    y: np.ndarray | None = None
    labels = None
    if target is not None:
        if target not in frame.columns:
            raise UserError(f"target column {target!r} is not in snapshot {snapshot}")
        missing_target = int(frame[target].isna().sum())
        if missing_target:
            raise UserError(
                f"{missing_target:,} rows of snapshot {snapshot} have no target ({target})",
                hint=f"add a not_null expectation on {target} so validation quarantines them",
            )
        y = targets(spec, frame[target])
        if spec.task in ("classification", "text-classification", "anomaly"):
            classes = np.unique(y)
            if len(classes) < 2 and spec.task != "anomaly":
                raise UserError(
                    f"target {target!r} has one class only ({classes[0]!r}); a classifier needs two or more"
                )
            labels = [str(c) for c in classes] if spec.task != "anomaly" else None
    y_series = pd.Series(y, index=frame.index) if y is not None else None
    s = spec.search
    needed = max(MIN_ROWS, int(np.ceil(3 / min(s.holdout_fraction, s.validation_fraction))))
    if len(frame) < needed:
        raise UserError(f"snapshot {snapshot} has {len(frame):,} rows; the split needs at least {needed}")
    if assigned is not None:  # split over the whole snapshot already (see sample_features)
        index = frame.index.to_numpy()
        train_idx, val_idx, hold_idx = (index[assigned == k] for k in (TRAIN, VALIDATION, HOLDOUT))
        if spec.schema_.timestamp is not None:
            order = frame[spec.schema_.timestamp].to_numpy().argsort(kind="stable")
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            train_idx, val_idx, hold_idx = (
                idx[np.argsort(rank[idx], kind="stable")] for idx in (train_idx, val_idx, hold_idx)
            )
            split = "time"
        else:
            split = "stratified" if labels is not None else "random"
    elif spec.schema_.timestamp is not None:
        frame = frame.sort_values(spec.schema_.timestamp, kind="stable")
        order = frame.index.to_numpy()
        n = len(order)
        n_hold, n_val = int(n * s.holdout_fraction), int(n * s.validation_fraction)
        train_idx, val_idx, hold_idx = (
            order[: n - n_hold - n_val],
            order[n - n_hold - n_val : n - n_hold],
            order[n - n_hold :],
        )
        split = "time"
    else:
        index = frame.index.to_numpy()
        strat = y if labels is not None else None
        try:
            rest, hold_idx = train_test_split(
                index, test_size=s.holdout_fraction, random_state=s.seed, stratify=strat
            )
            strat_rest = y_series.loc[rest].to_numpy() if strat is not None and y_series is not None else None
            train_idx, val_idx = train_test_split(
                rest,
                test_size=s.validation_fraction / (1 - s.holdout_fraction),
                random_state=s.seed,
                stratify=strat_rest,
            )
        except ValueError as exc:
            raise UserError(
                f"cannot split snapshot {snapshot} for {spec.task}: {exc}",
                hint="each class needs a few rows in train, validation and holdout",
            ) from exc
        split = "stratified" if strat is not None else "random"
    X = model_inputs(frame, layout)  # indexed by the frame's row labels, whatever their order

    def part(idx: np.ndarray) -> tuple[pd.DataFrame, np.ndarray | None]:
        rows = X.loc[idx].reset_index(drop=True)
        return rows, None if y_series is None else y_series.loc[idx].to_numpy()

    X_train, y_train = part(train_idx)
    X_val, y_val = part(val_idx)
    X_hold, y_hold = part(hold_idx)
    if spec.task == "anomaly" and y_val is not None and len(np.unique(y_val)) < 2:
        raise UserError(
            "the validation split holds no anomalies (or only anomalies): trials cannot be scored "
            "and the threshold cannot be calibrated",
            hint="collect more labelled data, or raise search.validation_fraction",
        )
    if labels is not None and spec.task != "anomaly" and y_train is not None:
        seen = set(np.unique(y_train))
        if len(seen) < 2:
            raise UserError(
                "the training split holds one class only; more data or a different split is needed"
            )
        unseen = sorted({str(c) for c in np.concatenate([y_val, y_hold]) if c not in seen})
        if unseen:
            raise UserError(
                f"class {', '.join(map(repr, unseen))} occurs in the validation or holdout split but "
                f"never in the training split ({data_split_note(split)})",
                hint="collect more data covering every class, or lower search.holdout_fraction / "
                "validation_fraction",
            )
    return TrainingData(snapshot, layout, X_train, y_train, X_val, y_val, X_hold, y_hold, split, labels)
