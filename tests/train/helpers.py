"""Helpers for the training tests: simulated pumps turned into validated feature snapshots.

Snapshots are made without Ray (``land_batch`` + ``record_source_parts`` + ``take_snapshot``,
as in tests/validate), then validated and featurised exactly as ``edgeml`` does. Training
itself needs Ray: one local Ray is started per session and every ``ray_session`` reuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from edgeml.features.build import build_features
from edgeml.ingest.lake import Part, record_source_parts, take_snapshot
from edgeml.ingest.run import land_batch
from edgeml.settings import Settings
from edgeml.simulate.sensors import SensorSimulation, simulate_sensors
from edgeml.spec import Spec
from edgeml.spec.loader import parse_spec
from edgeml.store import store_from_settings
from edgeml.train.data import TrainingData
from edgeml.validate import validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: a short maintenance note per fault, for text classification
NOTES = {
    "ok": ["routine check all normal", "no issue found on round", "running smoothly nothing to report"],
    "bearing_wear": ["grinding noise from bearing", "bearing rattles high vibration", "rough bearing sound"],
    "overheating": ["casing very hot to touch", "motor overheating smell", "temperature alarm hot housing"],
    "pressure_leak": ["pressure dropping leak at seal", "fluid leak under pump", "seal leaking low pressure"],
}


def simulate_frame(
    machines: int = 3, readings: int = 400, seed: int = 8, fault_rate: float = 0.01
) -> pd.DataFrame:
    """Simulated pump readings as a DataFrame (ts as UTC datetimes)."""
    cols = simulate_sensors(
        SensorSimulation(machines=machines, readings=readings, seed=seed, fault_rate=fault_rate)
    )
    frame = pd.DataFrame(cols)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def with_notes(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Add a ``note`` column: one of the fault's maintenance notes."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["note"] = [NOTES[f][int(rng.integers(len(NOTES[f])))] for f in out["fault"]]
    return out


def spec_from_dict(data: dict[str, Any], folder: Path, file_name: str | None = None) -> Spec:
    """Write ``data`` as a spec file in ``folder`` and parse it from there."""
    text = yaml.safe_dump(data, sort_keys=False)
    path = folder / (file_name or f"{data['name']}.yaml")
    path.write_text(text, encoding="utf-8")
    return parse_spec(text, source=str(path), base_dir=folder)


def example_data(name: str) -> dict[str, Any]:
    """An example spec as a plain dict, to be edited before parsing."""
    data: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


def store_file_source(name: str = "history") -> dict[str, str]:
    return {"name": name, "kind": "file", "path": "store://landing/pumps/*.csv"}


# ------------------------------------------------------------------ specs, one per task


def faults_spec(name: str = "pump-faults", **search: Any) -> dict[str, Any]:
    """examples/pump-faults.yaml with only its file source (the MQTT one needs a broker)."""
    data = example_data("pump-faults")
    data["name"] = name
    data["sources"] = [s for s in data["sources"] if s["kind"] == "file"]
    data["search"].update(search)
    return data


def cheap_faults(name: str, **gates: Any) -> dict[str, Any]:
    """The fault example searching two deterministic families (no ASHA, no MLP): same data, same model."""
    data = faults_spec(name, trials=2, families=["logistic", "random_forest"], scheduler="fifo", seed=0)
    data["search"]["space"] = {"random_forest": {"n_estimators": {"low": 20, "high": 40, "int": True}}}
    data["gates"].update(gates)
    return data


def power_spec(name: str = "pump-power", **search: Any) -> dict[str, Any]:
    """examples/pump-power.yaml with only its file source (its SQL source is a DuckDB file elsewhere)."""
    data = example_data("pump-power")
    data["name"] = name
    data["sources"] = [s for s in data["sources"] if s["kind"] == "file"]
    data["search"].update(search)
    return data


def anomaly_spec(name: str = "pump-anomaly", **search: Any) -> dict[str, Any]:
    """examples/pump-anomaly.yaml reading the landed CSVs instead of the vendor's HTTP API."""
    data = example_data("pump-anomaly")
    data["name"] = name
    data["sources"] = [store_file_source()]
    data["search"].update(search)
    return data


def cluster_spec(name: str = "pump-clusters", **search: Any) -> dict[str, Any]:
    """Operating regimes of the pumps: k-means over the sensors and a row feature."""
    return {
        "version": 1,
        "name": name,
        "sources": [store_file_source()],
        "schema": {
            "timestamp": "ts",
            "entity": "machine_id",
            "columns": {
                "ts": {"type": "timestamp", "nullable": False},
                "machine_id": {"type": "string", "nullable": False},
                "temperature": {"type": "float"},
                "vibration": {"type": "float"},
                "pressure": {"type": "float"},
                "rpm": {"type": "float"},
                "power_kw": {"type": "float"},
            },
        },
        "features": {"row": [{"name": "specific_power", "expr": "power_kw / maximum(rpm, 1) * 1000"}]},
        "task": "clustering",
        "search": {"families": ["kmeans"], "trials": 2, "seed": 3, **search},
    }


def notes_spec(name: str = "pump-notes", **search: Any) -> dict[str, Any]:
    """Which fault a maintenance note describes; no timestamp, so the split is stratified."""
    return {
        "version": 1,
        "name": name,
        "sources": [store_file_source()],
        "schema": {
            "columns": {
                "machine_id": {"type": "string", "nullable": False},
                "note": {"type": "text"},
                "fault": {"type": "category", "nullable": False},
            },
        },
        "features": {"exclude": ["machine_id"]},
        "target": "fault",
        "task": "text-classification",
        "search": {"families": ["tfidf_linear"], "trials": 2, "seed": 5, **search},
    }


SPECS: dict[str, Callable[..., dict[str, Any]]] = {
    "classification": faults_spec,
    "regression": power_spec,
    "clustering": cluster_spec,
    "anomaly": anomaly_spec,
    "text-classification": notes_spec,
}


def task_frame(task: str) -> pd.DataFrame:
    """Small simulated data for ``task`` (text adds a maintenance note per row)."""
    frame = simulate_frame()
    return with_notes(frame) if task == "text-classification" else frame


def make_snapshot(spec: Spec, settings: Settings, frame: pd.DataFrame, source: str = "history") -> str:
    """Land ``frame`` as ``source``, snapshot, validate and build features; return the snapshot id."""
    meta = land_batch(
        frame,
        schema=spec.schema_,
        dataset=spec.name,
        source=source,
        timestamp=spec.schema_.timestamp,
        store_url=settings.store_url,
        s3=settings.store.s3,
    )
    parts = [
        Part(str(r.key), str(r.sha256), int(r.rows), int(r.bytes), source, str(r.date))
        for r in meta.itertuples(index=False)
        if r.kind == "clean"
    ]
    store = store_from_settings(settings)
    record_source_parts(store, spec.name, source, parts, append=False)
    snapshot = take_snapshot(store, spec)
    validate(spec, settings, snapshot.id)
    build_features(spec, settings, snapshot.id)
    return snapshot.id


@dataclass
class TaskData:
    spec: Spec
    data: TrainingData


def housing_frame(spacing_s: int = 30) -> pd.DataFrame:
    """NannyML's modified California housing, read from the CSVs the package ships (importing NannyML
    costs seconds), shaped as ``edgeml data example housing`` writes it (examples/housing-value.yaml).

    The blocks are re-stamped ``spacing_s`` apart, in their order: hourly stamps would make one lake
    part per day (586 of them) and the tests slow, while the rows and their order stay the data's.
    """
    import importlib.util

    found = importlib.util.find_spec("nannyml")
    assert found is not None
    assert found.submodule_search_locations is not None
    data = Path(next(iter(found.submodule_search_locations))) / "datasets" / "data"
    reference = pd.read_csv(data / "california_housing_reference.csv")
    analysis = pd.read_csv(data / "california_housing_analysis.csv").merge(
        pd.read_csv(data / "california_housing_analysis_gt.csv"), on="id"
    )
    frame = pd.concat([reference, analysis], ignore_index=True).drop(columns=["y_pred_proba", "y_pred"])

    def snake(name: str) -> str:
        return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))

    frame = frame.rename(columns={"clf_target": "high_value"}).rename(columns=snake)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame["timestamp"] = start + pd.to_timedelta(np.arange(len(frame)) * spacing_s, unit="s")
    return frame
