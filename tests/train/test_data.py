"""Training data: every problem the user can fix is a UserError before any trial; splits by time or class."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from edgeml.errors import UserError
from edgeml.settings import Settings
from edgeml.train.data import load_training_data

from .helpers import (
    NOTES,
    TaskData,
    cluster_spec,
    faults_spec,
    make_snapshot,
    notes_spec,
    power_spec,
    simulate_frame,
    spec_from_dict,
    with_notes,
)


@pytest.fixture
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to start Ray or a trial fail the test loudly."""

    @contextmanager
    def refuse_ray(*args: Any, **kwargs: Any) -> Iterator[None]:
        raise AssertionError("Ray was started before the data was checked")
        yield  # pragma: no cover

    def refuse_search(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a trial was started before the data was checked")

    monkeypatch.setattr("edgeml.ingest.runtime.ray_session", refuse_ray)
    monkeypatch.setattr("edgeml.train.run.run_search", refuse_search)


def _target_nan(tmp_path: Path, settings: Settings) -> Any:
    data = power_spec()
    data["expectations"] = [e for e in data["expectations"] if e["kind"] != "not_null"]
    spec = spec_from_dict(data, tmp_path)
    frame = simulate_frame()
    frame.loc[frame.index[::50], "power_kw"] = np.nan
    make_snapshot(spec, settings, frame)
    return spec


def _one_class(tmp_path: Path, settings: Settings) -> Any:
    spec = spec_from_dict(faults_spec(), tmp_path)
    frame = simulate_frame().assign(fault="ok", is_anomaly=False)
    make_snapshot(spec, settings, frame)
    return spec


def two_classes(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(fault=np.where(np.arange(len(frame)) % 2, "ok", "bearing_wear"))


def _too_few_rows(tmp_path: Path, settings: Settings) -> Any:
    spec = spec_from_dict(notes_spec(), tmp_path)
    make_snapshot(spec, settings, with_notes(two_classes(simulate_frame(machines=1, readings=25))))
    return spec


def _too_few_for_a_small_holdout(tmp_path: Path, settings: Settings) -> Any:
    spec = spec_from_dict(notes_spec(holdout_fraction=0.05), tmp_path)
    make_snapshot(spec, settings, with_notes(two_classes(simulate_frame(machines=1, readings=50))))
    return spec


def _target_missing(tmp_path: Path, settings: Settings) -> Any:
    """The spec gained a target column after the snapshot's features were built."""
    built = spec_from_dict(power_spec(), tmp_path)
    make_snapshot(built, settings, simulate_frame())
    data = power_spec()
    data["schema"]["columns"]["efficiency"] = {"type": "float"}
    data["target"] = "efficiency"
    data["expectations"] = [e for e in data["expectations"] if e["kind"] != "not_null"]
    return spec_from_dict(data, tmp_path, "edited.yaml")


def _input_missing(tmp_path: Path, settings: Settings) -> Any:
    """The spec gained an input column after the snapshot's features were built."""
    built = spec_from_dict(power_spec(), tmp_path)
    make_snapshot(built, settings, simulate_frame())
    data = power_spec()
    data["schema"]["columns"]["humidity"] = {"type": "float"}
    return spec_from_dict(data, tmp_path, "edited.yaml")


def _class_only_in_holdout(tmp_path: Path, settings: Settings) -> Any:
    spec = spec_from_dict(faults_spec(), tmp_path)
    frame = simulate_frame()
    late = frame["ts"] >= frame["ts"].quantile(0.9)
    frame.loc[late & (frame["machine_id"] == "pump-001"), "fault"] = "overheating"
    frame.loc[~late & (frame["fault"] == "overheating"), "fault"] = "ok"
    make_snapshot(spec, settings, frame)
    return spec


BAD = {
    "target-nan": (_target_nan, "rows of snapshot", "have no target (power_kw)"),
    "one-class": (_one_class, "target 'fault' has one class only ('ok')", "two or more"),
    "too-few-rows": (_too_few_rows, "has 25 rows", "the split needs at least 30"),
    "small-holdout": (_too_few_for_a_small_holdout, "has 50 rows", "the split needs at least 60"),
    "target-missing": (_target_missing, "target column 'efficiency' is not in snapshot", ""),
    "input-missing": (_input_missing, "has no column humidity", "rebuild features"),
    "class-unseen-in-training": (_class_only_in_holdout, "'overheating'", "never in the training split"),
}


@pytest.mark.usefixtures("no_search")
@pytest.mark.parametrize("case", list(BAD))
def test_bad_training_data_is_a_user_error_before_any_trial(
    case: str, tmp_path: Path, settings: Settings
) -> None:
    from edgeml.train.run import train

    build, *fragments = BAD[case]
    spec = build(tmp_path, settings)
    with pytest.raises(UserError) as caught:
        load_training_data(spec, settings)
    for fragment in fragments:
        assert fragment in caught.value.message
    with pytest.raises(UserError) as again:
        train(spec, settings)  # train() checks the same way, before Ray and the search
    assert again.value.message == caught.value.message


def test_missing_target_hints_at_a_not_null_expectation(tmp_path: Path, settings: Settings) -> None:
    spec = _target_nan(tmp_path, settings)
    with pytest.raises(UserError) as caught:
        load_training_data(spec, settings)
    assert caught.value.message.startswith("24 rows of snapshot")
    assert caught.value.hint == "add a not_null expectation on power_kw so validation quarantines them"


def test_unvalidated_snapshot_is_refused(tmp_path: Path, settings: Settings) -> None:
    from edgeml.ingest.lake import Part, record_source_parts, take_snapshot
    from edgeml.ingest.run import land_batch
    from edgeml.store import store_from_settings

    spec = spec_from_dict(power_spec(), tmp_path)
    meta = land_batch(
        simulate_frame(),
        schema=spec.schema_,
        dataset=spec.name,
        source="history",
        timestamp="ts",
        store_url=settings.store_url,
        s3=settings.store.s3,
    )
    parts = [
        Part(r.key, r.sha256, int(r.rows), int(r.bytes), "history", r.date)
        for r in meta.itertuples()
        if r.kind == "clean"
    ]
    store = store_from_settings(settings)
    record_source_parts(store, spec.name, "history", parts, append=False)
    take_snapshot(store, spec)
    with pytest.raises(UserError, match="has not been validated"):
        load_training_data(spec, settings)


# ------------------------------------------------------------------------------ splits


def test_time_aware_split_when_the_schema_has_a_timestamp(tmp_path: Path, settings: Settings) -> None:
    data = power_spec()
    data["features"]["row"].append({"name": "hour_of_day", "expr": "hour(ts)"})  # puts ts among the inputs
    spec = spec_from_dict(data, tmp_path)
    frame = simulate_frame()
    make_snapshot(spec, settings, frame.sample(frac=1.0, random_state=0))  # landed out of order
    split = load_training_data(spec, settings)
    assert split.split == "time"
    assert split.sizes() == {"train": 720, "validation": 240, "holdout": 240}
    train_ts, val_ts, hold_ts = (x["ts"].to_numpy() for x in (split.X_train, split.X_val, split.X_hold))
    assert train_ts.max() <= val_ts.min()
    assert val_ts.max() <= hold_ts.min()
    # targets stay with their rows: look each row's power up by (ts, rpm)
    epoch = (frame["ts"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    truth = dict(zip(zip(epoch, frame["rpm"], strict=True), frame["power_kw"], strict=True))
    for X, y in ((split.X_train, split.y_train), (split.X_val, split.y_val), (split.X_hold, split.y_hold)):
        assert y is not None
        assert [truth[k] for k in zip(X["ts"], X["rpm"], strict=True)] == pytest.approx(list(y))


def test_time_split_of_the_fault_example(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("classification")
    data = td.data
    assert data.split == "time"
    assert data.labels == ["bearing_wear", "ok", "overheating", "pressure_leak"]
    assert (
        data.X_train["ts"].max()
        <= data.X_val["ts"].min()
        <= data.X_val["ts"].max()
        <= data.X_hold["ts"].min()
    )
    assert list(data.X_train.columns) == data.layout.columns


def test_stratified_split_without_a_timestamp(task_data: Callable[[str], TaskData]) -> None:
    td = task_data("text-classification")
    data = td.data
    assert data.split == "stratified"
    assert data.sizes() == {"train": 720, "validation": 240, "holdout": 240}
    everything = np.concatenate([data.y_train, data.y_val, data.y_hold])  # type: ignore[list-item]
    overall = pd.Series(everything).value_counts(normalize=True)
    for X, y in ((data.X_train, data.y_train), (data.X_val, data.y_val), (data.X_hold, data.y_hold)):
        assert y is not None
        assert set(y) == set(NOTES)  # each class in each split
        share = pd.Series(y).value_counts(normalize=True)
        assert share.reindex(overall.index).to_numpy() == pytest.approx(overall.to_numpy(), abs=0.02)
        assert all(note in NOTES[label] for note, label in zip(X["note"], y, strict=True))


def test_stratified_split_follows_the_seed(tmp_path: Path, settings: Settings) -> None:
    spec = spec_from_dict(notes_spec(), tmp_path)
    make_snapshot(spec, settings, with_notes(simulate_frame()))
    first, second = load_training_data(spec, settings), load_training_data(spec, settings)
    assert first.X_hold.equals(second.X_hold)
    assert np.array_equal(first.y_train, second.y_train)  # type: ignore[arg-type]
    other_seed = spec.model_copy(update={"search": spec.search.model_copy(update={"seed": 99})})
    other = load_training_data(other_seed, settings)
    assert not np.array_equal(first.y_train, other.y_train)  # type: ignore[arg-type]


def test_random_split_without_timestamp_or_labels(tmp_path: Path, settings: Settings) -> None:
    data = cluster_spec()
    del data["schema"]["timestamp"]
    spec = spec_from_dict(data, tmp_path)
    make_snapshot(spec, settings, simulate_frame())
    split = load_training_data(spec, settings)
    assert split.split == "random"
    assert split.y_train is None
    assert split.y_hold is None
    assert split.labels is None
    assert split.sizes() == {"train": 720, "validation": 240, "holdout": 240}
    assert list(split.X_train.columns) == ["temperature", "vibration", "pressure", "rpm", "power_kw"]


def test_anomaly_target_becomes_zero_one(task_data: Callable[[str], TaskData]) -> None:
    data = task_data("anomaly").data
    assert data.labels is None
    for y in (data.y_train, data.y_val, data.y_hold):
        assert y is not None
        assert y.dtype == np.int64
        assert set(np.unique(y)) == {0, 1}


# ------------------------------------------------------------- medium and large data: samples


def _medium(data: dict[str, Any], sample_rows: int = 1000) -> dict[str, Any]:
    data["pipeline"] = {"data_volume": "medium", "sample_rows": sample_rows}
    return data


def test_medium_data_samples_each_split_of_the_whole_snapshot_by_time(
    tmp_path: Path, settings: Settings
) -> None:
    spec = spec_from_dict(_medium(faults_spec()), tmp_path)
    frame = simulate_frame(machines=4, readings=1500)
    make_snapshot(spec, settings, frame)
    data = load_training_data(spec, settings)
    assert data.rows_total == len(frame) == 6000
    assert data.split == "time"
    sizes = data.sizes()
    # each split is a bounded sample: train holds about 1,000 of its 3,600 rows
    assert 850 <= sizes["train"] <= 1150
    assert all(n <= 1150 for n in sizes.values())
    # the holdout is still the newest part of the whole snapshot, not of the sample
    cut_hold = frame["ts"].sort_values().iloc[6000 - 1200]
    cut_hold_s = (cut_hold - pd.Timestamp(0, tz="UTC")).total_seconds()
    assert data.X_hold["ts"].min() >= cut_hold_s > data.X_val["ts"].max()
    assert data.X_train["ts"].max() <= data.X_val["ts"].min()
    # stratified: the classes keep their shares in the training sample
    population = frame.loc[frame["ts"] < frame["ts"].sort_values().iloc[3600], "fault"]
    share = pd.Series(data.y_train).value_counts(normalize=True)
    expected = population.value_counts(normalize=True)
    assert share.reindex(expected.index).fillna(0).to_numpy() == pytest.approx(expected.to_numpy(), abs=0.04)
    again = load_training_data(spec, settings)  # reproducible
    assert again.X_train.equals(data.X_train)


def test_medium_data_without_a_timestamp_splits_every_row_by_a_seeded_draw(
    tmp_path: Path, settings: Settings
) -> None:
    spec = spec_from_dict(_medium(notes_spec(), sample_rows=1000), tmp_path)
    frame = with_notes(simulate_frame(machines=4, readings=1000))
    make_snapshot(spec, settings, frame)
    data = load_training_data(spec, settings)
    assert data.split == "stratified"
    assert data.rows_total == 4000
    sizes = data.sizes()
    assert 850 <= sizes["train"] <= 1150  # sampled from ~2,400 training rows
    assert 700 <= sizes["holdout"] <= 900  # ~20% of 4,000: under the cap, kept whole
    assert data.labels is not None
    assert data.y_hold is not None
    assert set(data.y_hold) == set(NOTES)
