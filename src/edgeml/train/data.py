"""Training data: the feature table of a snapshot, checked and split before any trial starts."""

from __future__ import annotations

import json
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

__all__ = ["MIN_ROWS", "TrainingData", "load_training_data", "split_features"]

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


def _inputs(frame: pd.DataFrame, layout: InputLayout) -> pd.DataFrame:
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
        frame, assigned, total = sample_features(store, spec, parts)
        data = split_features(spec, frame, snapshot, assigned)
        data.rows_total = total
        return data
    snapshot, frame = _feature_table(store, spec, settings, snapshot_id)
    return split_features(spec, frame, snapshot)


def _read_features(store: ObjectStore, spec: Spec, snapshot: str, parts: list[Part]) -> list[Part]:
    record_read(store, spec, "features", snapshot, len(parts))
    return parts


#: a class keeps at least this many rows (or all it has) in a sampled split
MIN_ROWS_PER_CLASS = 1_000
TRAIN, VALIDATION, HOLDOUT = 0, 1, 2


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
    store: ObjectStore, spec: Spec, parts: list[Part]
) -> tuple[pd.DataFrame, np.ndarray, int]:
    """A split of the whole feature table and a bounded, stratified sample of each split.

    Two passes over the parts, one part in memory at a time:

    1. Split every row of the snapshot. With a timestamp, by time: the cut points are the
       (1 - holdout - validation) and (1 - holdout) quantiles of all timestamps (the newest rows
       are held out). Without, each row draws a uniform number from a generator seeded by
       ``search.seed`` and the part's position: reproducible, and every row is in exactly one split.
    2. Sample each split down to ``pipeline.sample_rows`` rows: per class (the target's values,
       for classification and anomaly), proportional allocation, every class keeping at least
       min(its rows, 1,000, sample_rows / (10 × classes)); kept by a second seeded draw per row.

    Returns the sampled rows, their split (0 train, 1 validation, 2 holdout) and the total rows.
    """
    s, cap = spec.search, spec.pipeline.sample_rows
    ts_name = spec.schema_.timestamp
    needed = [c for c in (ts_name, spec.target) if c is not None]
    stamps: list[np.ndarray] = []
    strata_parts: list[np.ndarray | None] = []
    sizes: list[int] = []
    classes = _Classes()
    for part in parts:  # pass 1: only the timestamp and the target
        table = read_parts(store, [part]).select(needed)
        sizes.append(table.num_rows)
        if ts_name is not None:
            stamps.append(table[ts_name].cast("int64").to_numpy(zero_copy_only=False))
        strata = classes.encode(table[spec.target].to_pandas()) if _stratified(spec) else None
        strata_parts.append(strata)
    total = sum(sizes)
    cuts: tuple[float, float] | None = None
    if ts_name is not None and total:
        every = np.concatenate(stamps)
        n_hold, n_val = int(total * s.holdout_fraction), int(total * s.validation_fraction)
        ordered = np.sort(every, kind="stable")
        cuts = (float(ordered[total - n_hold - n_val]), float(ordered[total - n_hold]))
        del every, ordered

    def assign(i: int) -> np.ndarray:
        if cuts is not None:
            t = stamps[i]
            return np.where(t >= cuts[1], HOLDOUT, np.where(t >= cuts[0], VALIDATION, TRAIN))
        u = np.random.default_rng([s.seed, i, 0]).random(sizes[i])
        hold, val = s.holdout_fraction, s.holdout_fraction + s.validation_fraction
        return np.where(u < hold, HOLDOUT, np.where(u < val, VALIDATION, TRAIN))

    splits = [assign(i).astype(np.int8) for i in range(len(parts))]  # 1 byte a row
    keep_p: dict[tuple[int, int], float] = {}  # (split, class code) -> probability a row is kept
    for split in (TRAIN, VALIDATION, HOLDOUT):
        counts: dict[int, int] = {}
        for sp, strata in zip(splits, strata_parts, strict=True):
            mine = sp == split
            if strata is None:
                values, n = np.array([0]), np.array([int(mine.sum())])
            else:
                values, n = np.unique(strata[mine], return_counts=True)
            for v, c in zip(values, n, strict=True):
                counts[int(v)] = counts.get(int(v), 0) + int(c)
        rows = sum(counts.values())
        floor = min(MIN_ROWS_PER_CLASS, cap // (10 * max(1, len(counts))))
        for value, count in counts.items():
            quota = max(min(count, floor), round(cap * count / rows)) if rows > cap else count
            keep_p[(split, value)] = min(1.0, quota / count) if count else 0.0
    frames, assigned = [], []
    for i, part in enumerate(parts):  # pass 2: the sampled rows, every column
        u = np.random.default_rng([s.seed, i, 1]).random(sizes[i])
        strata = strata_parts[i]
        p = np.zeros(sizes[i])
        for (split, value), prob in keep_p.items():
            p[(splits[i] == split) & (strata == value if strata is not None else True)] = prob
        keep = u < p
        if keep.any():
            table = read_parts(store, [part])
            frames.append(table.filter(pa.array(keep)).to_pandas())
            assigned.append(splits[i][keep])
    frame = pd.concat(frames, ignore_index=True) if frames else read_parts(store, parts[:1]).to_pandas()
    split_of = np.concatenate(assigned) if assigned else np.empty(0, dtype=np.int64)
    return frame, split_of, total


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
        if spec.task in ("classification", "text-classification", "anomaly"):
            y = (
                frame[target].astype(str).to_numpy()
                if spec.task != "anomaly"
                else (frame[target].astype(bool).astype(np.int64).to_numpy())
            )
            classes = np.unique(y)
            if len(classes) < 2 and spec.task != "anomaly":
                raise UserError(
                    f"target {target!r} has one class only ({classes[0]!r}); a classifier needs two or more"
                )
            labels = [str(c) for c in classes] if spec.task != "anomaly" else None
        else:
            y = frame[target].astype("float64").to_numpy()
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
    X = _inputs(frame, layout)  # indexed by the frame's row labels, whatever their order

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
