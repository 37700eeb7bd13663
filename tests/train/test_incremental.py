"""Training on every row, batch by batch (data_volume medium/large), against training in memory.

The quality test uses a real data set (NannyML's California housing, as examples/housing-value.yaml
trains on it); the memory test generated readings, at two sizes, each in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, SGDClassifier, SGDRegressor

from edgeml.settings import Settings, load_settings
from edgeml.spec import Spec
from edgeml.train.data import TrainingData, load_training_data
from edgeml.train.metrics import evaluate
from edgeml.train.mlp import MLPClassifierTorch
from edgeml.train.search import fit_trial
from edgeml.train.stream import HOLDOUT, TRAIN, VALIDATION, order_statistics

from .conftest import TrainHome
from .helpers import example_data, housing_frame, make_snapshot, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
#: columns that tell the census blocks apart (the id and timestamp are no model inputs)
KEY = ["med_inc", "house_age", "population", "latitude", "longitude"]


@dataclass
class Housing:
    spec: Spec
    data: TrainingData


def _housing(root: Path, settings: Settings, volume: str, frame: pd.DataFrame) -> Housing:
    data = example_data("housing-value")
    data["name"] = f"housing-{volume}"
    data["pipeline"] = {"data_volume": volume, "sample_rows": 2000}
    spec = spec_from_dict(data, root)
    make_snapshot(spec, settings, frame, source="census")
    return Housing(spec, load_training_data(spec, settings))


@pytest.fixture(scope="module")
def housing(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Housing]:
    root = tmp_path_factory.mktemp("housing")
    settings = load_settings({"EDGEML_HOME": str(root / "home")})
    frame = housing_frame()
    return {volume: _housing(root, settings, volume, frame) for volume in ("small", "medium")}


def _config(family: str, **params: Any) -> dict[str, Any]:
    return {"family": family, **{f"{family}.{k}": v for k, v in params.items()}, "seed": 0}


def test_the_stream_splits_every_row_as_training_in_memory_does(housing: dict[str, Housing]) -> None:
    small, medium = housing["small"].data, housing["medium"].data
    assert medium.stream is not None
    # the same time cuts over the whole snapshot: the same rows in each split
    assert medium.stream.rows == (len(small.X_train), len(small.X_val), len(small.X_hold))
    assert len(medium.X_train) < medium.stream.rows[TRAIN]  # the sample is smaller than what streams
    seen = {k: pd.concat(list(medium.stream.batches([k], epoch=1))) for k in (TRAIN, VALIDATION, HOLDOUT)}
    stamps = {k: (f["timestamp"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds() for k, f in seen.items()}
    assert [len(seen[k]) for k in (TRAIN, VALIDATION, HOLDOUT)] == list(medium.stream.rows)
    assert stamps[TRAIN].max() < stamps[VALIDATION].min() <= stamps[VALIDATION].max() < stamps[HOLDOUT].min()
    rows = {k: set(seen[k][KEY].itertuples(index=False)) for k in seen}
    assert rows[HOLDOUT] == set(small.X_hold[KEY].itertuples(index=False))
    assert set(medium.X_hold[KEY].itertuples(index=False)) <= rows[HOLDOUT]  # a sample of that split
    assert set(medium.X_train[KEY].itertuples(index=False)) <= rows[TRAIN]
    again = pd.concat(list(medium.stream.batches([TRAIN], epoch=1)))
    other = pd.concat(list(medium.stream.batches([TRAIN], epoch=2)))
    assert again["id"].tolist() == seen[TRAIN]["id"].tolist()  # reproducible
    assert other["id"].tolist() != again["id"].tolist()  # each epoch in another order
    assert sorted(other["id"]) == sorted(again["id"])


@pytest.mark.parametrize(
    ("config", "in_memory", "streamed"),
    [
        (_config("logistic", C=1.0), LogisticRegression, SGDClassifier),
        (_config("mlp", epochs=3, hidden_units=32, layers=1, learning_rate=3e-3), MLPClassifierTorch, None),
    ],
    ids=["logistic", "mlp"],
)
def test_streamed_training_is_as_good_as_training_in_memory(
    housing: dict[str, Housing], config: dict[str, Any], in_memory: type, streamed: type | None
) -> None:
    small, medium = housing["small"], housing["medium"]
    whole = fit_trial(small.spec, small.data, config)  # every training row in memory
    stream = fit_trial(medium.spec, medium.data, config)  # every training row, batch by batch
    assert isinstance(whole[-1], in_memory)
    assert isinstance(stream[-1], streamed or in_memory)
    X, y = small.data.X_hold, small.data.y_hold  # the whole holdout: the same rows in both splits
    a = evaluate("classification", whole, X, y)
    b = evaluate("classification", stream, X, y)
    assert a["roc_auc"] > 0.9
    assert b["roc_auc"] == pytest.approx(a["roc_auc"], abs=0.02)
    assert b["accuracy"] == pytest.approx(a["accuracy"], abs=0.03)


def test_a_streamed_fit_learns_from_the_fields_labelled_rows(housing: dict[str, Housing]) -> None:
    """The field's labels are not in the snapshot's stream: the streamed fit must take them beside it."""
    medium = housing["medium"]
    assert medium.data.labels is not None
    config = _config("logistic", C=1.0)
    plain = fit_trial(medium.spec, medium.data, config)
    X = medium.data.X_hold.head(200).reset_index(drop=True)
    first, second = medium.data.labels[:2]
    contrary = np.where(plain.predict(X) == first, second, first)  # the field says the opposite
    field = pd.concat([X] * 20, ignore_index=True), np.concatenate([contrary] * 20)
    taught = fit_trial(medium.spec, replace(medium.data, field_train=field), config)
    assert (taught.predict(X) == contrary).mean() > 0.2


def test_the_linear_regressor_streams_by_sgd(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame.insert(0, "ts", start + pd.to_timedelta(np.arange(len(frame)), "min"))
    columns = {c: {"type": "float"} for c in frame.columns[1:]}
    columns["ts"] = {"type": "timestamp", "nullable": False}
    settings = load_settings({"EDGEML_HOME": str(tmp_path / "home")})
    scores = {}
    for volume in ("small", "medium"):
        data = {
            "name": f"diabetes-{volume}",
            "sources": [{"name": "history", "kind": "file", "path": "store://landing/d/*.csv"}],
            "schema": {"timestamp": "ts", "columns": columns},
            "target": "target",
            "task": "regression",
            "search": {"families": ["linear"]},
            "pipeline": {"data_volume": volume, "sample_rows": 1000},
        }
        spec = spec_from_dict(data, tmp_path)
        make_snapshot(spec, settings, frame)
        training = load_training_data(spec, settings)
        model = fit_trial(spec, training, _config("linear", alpha=1.0))
        assert isinstance(model[-1], SGDRegressor) == (volume == "medium")
        scores[volume] = evaluate("regression", model, training.X_hold, training.y_hold)["r2"]
    assert scores["small"] > 0.3
    assert scores["medium"] == pytest.approx(scores["small"], abs=0.05)


def test_order_statistics_are_exact_in_bounded_passes() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.integers(-(2**62), 2**62, 5000) for _ in range(4)] + [np.array([7, 7, 7])]
    ordered = np.sort(np.concatenate(chunks))
    ranks = [0, 1, 9_000, 19_999, len(ordered) - 1]
    assert order_statistics(lambda: iter(chunks), ranks) == [int(ordered[r]) for r in ranks]


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from threadpoolctl import threadpool_limits
    from edgeml.settings import load_settings
    from edgeml.spec.loader import parse_spec
    from edgeml.train.data import load_training_data
    from edgeml.train.search import fit_trial
    path, home, volume = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    spec = parse_spec(path.read_text(), source=str(path), base_dir=path.parent)
    spec = spec.model_copy(update={"pipeline": spec.pipeline.model_copy(update={"data_volume": volume})})
    with threadpool_limits(limits=1):
        data = load_training_data(spec, load_settings({"EDGEML_HOME": home}))
        fit_trial(spec, data, {"family": "logistic", "logistic.C": 1.0, "seed": 0})
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, from the forked test process
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024}))
    """
)


def _readings(rows: int, seed: int = 0) -> pd.DataFrame:
    """Twelve sensors and a label, a reading every 10 s: a lake part (one day) holds 8,640 rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=rows) for i in range(12)})
    frame["label"] = np.where(frame["x0"] + frame["x1"] + rng.normal(size=rows) > 0, "high", "low")
    stamps = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(rows) * 10, "s")
    frame.insert(0, "ts", stamps)
    return frame


def _snapshot(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    home = tmp_path / f"home-{rows}"
    columns = {"ts": {"type": "timestamp", "nullable": False}, "label": {"type": "category"}}
    data = {
        "name": f"readings-{rows}",
        "sources": [{"name": "history", "kind": "file", "path": "store://landing/r/*.csv"}],
        "schema": {"timestamp": "ts", "columns": columns | {f"x{i}": {"type": "float"} for i in range(12)}},
        "target": "label",
        "task": "classification",
        "search": {"families": ["logistic"]},
        "pipeline": {"data_volume": "medium", "sample_rows": 5000},
    }
    spec = spec_from_dict(data, tmp_path)
    make_snapshot(spec, load_settings({"EDGEML_HOME": str(home)}), _readings(rows))
    return tmp_path / f"{data['name']}.yaml", home


def _peak_mb(snapshot: tuple[Path, Path], volume: str) -> float:
    """Peak RSS of a fresh process that loads the training data and fits one logistic model."""
    spec, home = snapshot
    argv = [sys.executable, "-c", _CHILD, str(spec), str(home), volume]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


@pytest.mark.slow
def test_streamed_training_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    few, many = _snapshot(tmp_path, 30_000), _snapshot(tmp_path, 300_000)
    # the allocators (Python's, Arrow's mimalloc) add 0 to ~35 MB of noise to one run's peak, and
    # only ever add: the lower of two runs is the working set
    small = min(_peak_mb(few, "medium") for _ in range(2))
    large = min(_peak_mb(many, "medium") for _ in range(2))
    in_memory = _peak_mb(many, "small")  # the same rows, the whole table in memory
    # 10x the rows: the whole table in memory costs +125 MB on this machine; streamed, a batch,
    # one part and a 5,000-row sample per split stay what they were (within the noise above)
    assert in_memory - small >= 80, (small, large, in_memory)
    assert large - small <= (in_memory - small) / 3, (small, large, in_memory)


def test_spec_check_names_the_families_that_stream() -> None:
    """`spec check`'s table (spec/mission.py) says what the training code does."""
    from edgeml.spec.mission import STREAMED_FAMILIES
    from edgeml.spec.models import FAMILIES as SPEC_FAMILIES
    from edgeml.train.families import FAMILIES
    from edgeml.train.incremental import STREAMED_TASKS

    for task in SPEC_FAMILIES:
        streamed = {f for f in SPEC_FAMILIES[task] if FAMILIES[f].incremental is not None}
        expected = streamed if task in STREAMED_TASKS else set()
        assert set(STREAMED_FAMILIES.get(task, frozenset())) == expected, task


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_a_streamed_model_is_registered_and_passes_the_export_parity_gate(train_home: TrainHome) -> None:
    """Search, refit on train + validation (both streamed), register, then export for ONNX Runtime."""
    from edgeml.export.run import export_model
    from edgeml.train.run import train

    data = example_data("housing-value")
    data["name"] = "housing-streamed"
    data["pipeline"] = {"data_volume": "medium", "sample_rows": 2000}
    data["search"] = {"families": ["logistic", "mlp"], "trials": 2, "seed": 1, "scheduler": "fifo"}
    data["search"]["space"] = {"mlp": {"epochs": {"low": 2, "high": 3, "int": True}}}
    spec = spec_from_dict(data, train_home.specs)
    make_snapshot(spec, train_home.settings, housing_frame(), source="census")
    report = train(spec, train_home.settings)
    assert report.sizes["train"] < 8440  # trials scored on samples, the model fitted on every row
    assert report.holdout["roc_auc"] > 0.9
    uri = f"models:/{spec.name}/{report.version}"
    exported = export_model(uri, "x86-64-generic", train_home.home / "export", train_home.settings)
    assert exported.family == report.family
    assert exported.parity["max_abs_diff"] <= 1e-4
    assert exported.parity["label_agreement"] >= 0.999
