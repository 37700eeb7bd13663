"""Example data that ships inside packages (nothing is downloaded), as CSV for the example specs.

- ``titanic``: NannyML's Titanic passengers (categorical and numeric columns with missing values),
  the 891 with a known outcome.
- ``housing``: NannyML's modified California housing (census block features with a timestamp);
  its target ``high_value`` is 1 when the block's median house value is above the median (NannyML
  ships the binary target only).
- ``maintenance-notes``: generated maintenance notes with realistic vocabulary and noise (typos,
  shouting, part numbers, readings with units, mixed languages, empty notes), labelled by fault.
- ``iris``, ``wine``, ``breast-cancer``, ``diabetes``: scikit-learn's bundled sets (``target`` is
  the class, or for diabetes the disease progression).

``edgeml data example NAME`` writes one to the store where the example spec reads it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from edgeml.errors import UserError
from edgeml.store import ObjectStore

__all__ = ["DATASETS", "maintenance_notes", "write_dataset"]


def _nannyml(loader: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from edgeml._thirdparty import import_nannyml

    nml = import_nannyml()
    with warnings.catch_warnings():  # NannyML 0.13 reads its files with importlib.resources.path
        warnings.simplefilter("ignore", DeprecationWarning)
        frames: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] = getattr(nml, loader)()
    return frames


def _titanic() -> pd.DataFrame:
    reference, _, _ = _nannyml("load_titanic_dataset")
    keep = ["PassengerId", "Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked", "Cabin", "Survived"]
    frame = reference[keep].rename(columns=str.lower)
    frame["deck"] = frame.pop("cabin").str[0]  # the cabin's deck letter; missing for most passengers
    frame["pclass"] = frame["pclass"].map({1: "first", 2: "second", 3: "third"})
    return frame


def _housing() -> pd.DataFrame:
    reference, analysis, targets = _nannyml("load_modified_california_housing_dataset")
    analysis = analysis.merge(targets, on="id")
    frame = pd.concat([reference, analysis], ignore_index=True)
    frame = frame.drop(columns=["y_pred_proba", "y_pred"]).rename(columns={"clf_target": "high_value"})
    return frame.rename(columns=lambda c: c if c in ("id", "timestamp", "high_value") else _snake(c))


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(name))


_NOTES = {
    "ok": (
        ["routine inspection", "weekly round", "checked pump", "PM done", "walkdown"],
        ["all normal", "no issues found", "running smooth", "nothing to report", "within limits", "OK"],
    ),
    "bearing_wear": (
        ["grinding noise from", "rattle at", "high vibration on", "rough sound from", "play in"],
        ["drive end bearing", "DE bearing", "NDE bearing", "motor bearing", "coupling side bearing"],
    ),
    "overheating": (
        [
            "casing hot at",
            "temperature alarm on",
            "burning smell near",
            "motor overheating at",
            "hot spot on",
        ],
        ["motor housing", "stator", "terminal box", "casing", "winding"],
    ),
    "pressure_leak": (
        ["leak at", "fluid dripping from", "pressure dropping, suspect", "weeping", "puddle under"],
        ["mechanical seal", "gland packing", "discharge flange", "suction line", "seal housing"],
    ),
}
_EXTRAS = [
    "reading {v:.1f} mm/s",
    "temp {t} degC",
    "pressure {p:.1f} bar",
    "part no. {n}",
    "WO#{w}",
    "ticket raised",
    "Prüfung nötig",
    "à vérifier",
    "monitor next shift",
    "!!",
]


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


def maintenance_notes(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """Notes written by technicians, one fault each: ``unit``, ``shift``, ``note`` and ``fault``."""
    rng = np.random.default_rng(seed)
    faults = rng.choice(list(_NOTES), rows, p=[0.55, 0.15, 0.15, 0.15])
    notes = []
    for fault in faults:
        first, second = _NOTES[fault]
        words = f"{rng.choice(first)} {rng.choice(second)}".split()
        if rng.random() < 0.15:  # a typo
            k = int(rng.integers(len(words)))
            words[k] = _typo(words[k], rng)
        text = " ".join(words)
        if rng.random() < 0.2:
            text = text.upper()
        for _ in range(int(rng.integers(0, 3))):
            extra = str(rng.choice(_EXTRAS)).format(
                v=rng.gamma(2, 2),
                t=int(rng.normal(70, 10)),
                p=rng.normal(6, 1),
                n=int(rng.integers(10000, 99999)),
                w=int(rng.integers(1000, 9999)),
            )
            text += rng.choice([", ", "; ", " - ", ". "]) + extra
        notes.append(text)
    frame = pd.DataFrame(
        {
            "unit": rng.choice([f"P-{i:03d}" for i in range(12)], rows),
            "shift": rng.choice(["early", "late", "night"], rows),
            "note": notes,
            "fault": faults,
        }
    )
    frame.loc[rng.random(rows) < 0.03, "note"] = None  # a note left empty
    return frame


def _sklearn(loader: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader)(as_frame=True)
        frame: pd.DataFrame = bunch.frame.rename(
            columns=lambda c: re.sub(r"[^0-9a-z]+", "_", str(c).lower()).strip("_")
        )
        return frame

    return load


DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "titanic": _titanic,
    "housing": _housing,
    "maintenance-notes": maintenance_notes,
    "iris": _sklearn("load_iris"),
    "wine": _sklearn("load_wine"),
    "breast-cancer": _sklearn("load_breast_cancer"),
    "diabetes": _sklearn("load_diabetes"),
}


def write_dataset(name: str, store: ObjectStore, key: str | None = None) -> tuple[str, int]:
    """Write data set ``name`` as CSV to ``key`` (default ``landing/NAME/NAME.csv``); (key, rows)."""
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    frame = DATASETS[name]()
    key = key or f"landing/{name}/{name}.csv"
    store.put(key, frame.to_csv(index=False).encode(), content_type="text/csv")
    return key, len(frame)
