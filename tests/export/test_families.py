"""Every family the spec accepts, with every input kind its task takes, converts and matches the model.

Pipelines are built and fitted as training builds them (``build_pipeline``) on small data with
missing values, then converted and run on the profile's runtime; parity is judged on rows the
model never saw, unseen categories and missing text among them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from edgeml.errors import SpecError
from edgeml.export.run import _build, _convert, _parity, _Runner, feeds, output_names
from edgeml.profiles import get_profile
from edgeml.spec.loader import parse_spec
from edgeml.spec.models import Spec
from edgeml.support import cells
from edgeml.train.families import FAMILIES
from edgeml.train.pipeline import build_pipeline, input_layout

WORDS = {
    "bad": ["Bearing", "grinding", "noise", "LEAK", "seal", "hot", "overheating", "vibration", "Ölpumpe"],
    "good": ["routine", "check", "normal", "ok", "smooth", "Prüfung", "clean", "quiet", "no", "issue"],
}


def frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    out = pd.DataFrame(
        {
            "a": np.where(rng.random(n) < 0.1, np.nan, a),
            "b": rng.integers(0, 10, n).astype(float),
            "on": rng.integers(0, 2, n).astype(float),
            "colour": rng.choice(np.array(["red", "green", "blue", None], dtype=object), n),
            "ts": 1_700_000_000.0 + rng.integers(0, 30 * 86400, n),
        }
    )
    label = np.where(a + (out["colour"] == "red") > 0.3, "bad", "good")
    notes = []
    for y in label:
        words = (
            rng.choice(WORDS[y], 4).tolist() + rng.choice(WORDS["bad" if y == "good" else "good"], 1).tolist()
        )
        notes.append(" ".join(words) + rng.choice([".", "!!", " -- 2x", ""]))
    out["note"] = notes
    out.loc[rng.random(n) < 0.1, "note"] = ""  # a missing text is an empty document
    out["y_cls"] = label
    out["y_reg"] = a * 3 + out["b"] + (out["colour"] == "blue") * 2 + rng.normal(size=n) * 0.1
    out["y_anom"] = (np.abs(a) > 2).astype(int)
    return out


def spec_for(task: str, family: str, openvino: bool) -> Spec:
    cols: dict[str, Any] = {"a": {"type": "float"}, "b": {"type": "int"}, "on": {"type": "bool"}}
    row: list[dict[str, str]] = [{"name": "ab", "expr": "a * b"}]
    if not openvino:
        cols |= {"colour": {"type": "category"}, "ts": {"type": "timestamp"}}
        row.append({"name": "hour", "expr": "hour(ts)"})
    target = {"classification": "y_cls", "regression": "y_reg", "anomaly": "y_anom"}.get(task)
    if task == "text-classification":
        cols, row, target = {"note": {"type": "text"}, "b": {"type": "int"}}, [], "y_cls"
    if target:
        cols[target] = {"type": {"y_cls": "category", "y_reg": "float", "y_anom": "int"}[target]}
    data: dict[str, Any] = {
        "version": 1,
        "name": "t",
        "sources": [{"name": "x", "kind": "file", "path": "x.csv"}],
        "schema": {"columns": cols},
        "features": {"row": row},
        "task": task,
        "search": {"families": [family]},
        "profiles": ["intel-nuc-openvino" if openvino else "x86-64-generic"],
    }
    if target:
        data["target"] = target
    return parse_spec(yaml.safe_dump(data), source="t.yaml")


RUNNABLE = [c for c in cells() if c.refused is None]


@pytest.mark.parametrize("cell", RUNNABLE, ids=[c.id for c in RUNNABLE])
def test_every_runnable_cell_converts_and_matches_the_model(cell: Any, tmp_path: Path) -> None:
    openvino = cell.runtime == "openvino"
    spec = spec_for(cell.task, cell.family, openvino)
    layout = input_layout(spec)
    params = {"epochs": 5, "n_estimators": 15, "max_iter": 20}
    pipeline = build_pipeline(spec, layout, FAMILIES[cell.family].build(spec.task, params, 0), params)
    train, test = frame(300, 1), frame(120, 2)
    if not openvino:
        test.loc[:9, "colour"] = "purple"  # a category training never saw: the unknown bucket
    y = train[spec.target] if spec.target else None
    pipeline.fit(train[layout.columns], y)
    if spec.task == "anomaly":
        pipeline[-1].calibrate(pipeline[:-1].transform(train[layout.columns]), y)
    profile = get_profile("intel-nuc-openvino" if openvino else "x86-64-generic")
    names = output_names(spec.task, spec.target)
    onnx_model = _convert(pipeline, layout, profile, cell.family, names)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        path = _build(onnx_model, "fp32", profile, stage, Path(tmp), None)
        outputs = _Runner(path, profile, [])(feeds(test[layout.columns], layout))
    assert list(outputs) == names
    parity = _parity(pipeline, outputs, test[layout.columns])
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["label_agreement"] == 1.0


def test_text_vectors_are_scikit_learns_for_noisy_and_non_ascii_text() -> None:
    """The exported TF-IDF gives the same vector as scikit-learn, word for word, on any host locale."""
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.feature_extraction.text import TfidfVectorizer

    from edgeml.train.pipeline import TOKEN_PATTERN

    docs = [
        "Motor HOT!! bearing-noise, 2x",
        "ÖLPUMPE leckt; Prüfung nötig",
        "",
        "routine check   ok",
        "SEAL leak at 10:30 -- pressure low",
        "İstanbul unit: ǅ KELVIN K",
    ]
    vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2)).fit(docs)
    onnx_model = convert_sklearn(
        vectorizer,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={id(vectorizer): {"tokenexp": TOKEN_PATTERN, "locale": "C"}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"text": np.array(docs, dtype=object).reshape(-1, 1)})[0]
    np.testing.assert_allclose(got, vectorizer.transform(docs).toarray(), atol=1e-6)


def _issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(yaml.safe_dump(data), source="t.yaml")
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def _spec(task: str, families: list[str], profiles: list[str], columns: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "t",
        "sources": [{"name": "x", "kind": "file", "path": "x.csv"}],
        "schema": {"columns": {**columns, "y": {"type": "bool"}}},
        "target": "y",
        "task": task,
        "search": {"families": families},
        "profiles": profiles,
    }


def test_spec_check_refuses_tree_ensembles_on_openvino_naming_the_profiles_that_run_them() -> None:
    issues = _issues(
        _spec(
            "classification",
            ["random_forest", "mlp"],
            ["x86-64-generic", "intel-nuc-openvino"],
            {"a": {"type": "float"}},
        )
    )
    assert len(issues) == 1
    assert issues[0].startswith("profiles[1]: intel-nuc-openvino (openvino) cannot run random_forest")
    assert "x86-64-generic" in issues[0]
    assert "arm64-rpi4" in issues[0]
    assert "can use mlp" in issues[0]


def test_spec_check_never_suggests_a_family_of_another_task() -> None:
    (issue,) = _issues(
        _spec("anomaly", ["isolation_forest"], ["intel-nuc-openvino"], {"a": {"type": "float"}})
    )
    assert "cannot run isolation_forest" in issue
    assert "runs no anomaly family" in issue
    assert "logistic" not in issue
    assert "mlp" not in issue


def test_spec_check_refuses_string_inputs_on_openvino() -> None:
    (issue,) = _issues(
        _spec(
            "classification",
            ["mlp"],
            ["intel-nuc-openvino"],
            {"a": {"type": "float"}, "c": {"type": "category"}},
        )
    )
    assert "cannot take this spec's categorical inputs" in issue
    assert "x86-64-generic" in issue
