"""The support matrix, proven: every runnable cell from a spec through `edgeml pipeline run` to an agent.

Each cell of :mod:`edgeml.support` that runs gets a spec over small data with every input kind
its runtime takes (numbers with gaps, a bool, a category with gaps, a timestamp feeding a row
feature, text with empty documents); `edgeml pipeline run` trains (one trial), exports, signs
and publishes it; `edgeml agent run` pulls it and answers the same rows over /predict, OIP v2
and MQTT, each compared with the native model from the registry. Refused cells are refused
by `edgeml spec check`. The page docs/support-matrix.md is these cells, rendered.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from edgeml.cli import main
from edgeml.profiles import load_profiles
from edgeml.support import Cell, cells, render_markdown

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = [c for c in cells() if c.refused is None]
REFUSED = [c for c in cells() if c.refused is not None]
PROFILE = {"onnxruntime": "x86-64-generic", "openvino": "intel-nuc-openvino"}
WORDS = {
    "bad": ["bearing", "Grinding", "noise", "LEAK", "seal", "hot", "overheating", "vibration", "Ölpumpe"],
    "good": ["routine", "check", "normal", "ok", "smooth", "Prüfung", "clean", "quiet", "no", "issue"],
}
#: one cheap trial per family
SPACE = {
    "random_forest": {"n_estimators": {"choices": [15]}},
    "hist_gradient_boosting": {"max_iter": {"choices": [20]}},
    "mlp": {"epochs": {"choices": [8]}, "hidden_units": {"choices": [16]}},
    "isolation_forest": {"n_estimators": {"choices": [50]}},
    "kmeans": {"n_clusters": {"choices": [3]}},
}


def rows(n: int, seed: int, unseen: bool = False) -> pd.DataFrame:
    """Readings with gaps in every nullable column; ``unseen`` puts in a category training never saw."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 90 * 86400, n), "s"),
            "a": np.where(rng.random(n) < 0.1, np.nan, a),
            "b": rng.integers(0, 10, n),
            "on": rng.random(n) < 0.5,
            "colour": rng.choice(np.array(["red", "green", "blue", None], dtype=object), n),
        }
    )
    frame = frame.sort_values("ts", ignore_index=True)
    label = np.where(a + (frame["colour"] == "red") > 0.3, "bad", "good")
    frame["note"] = [
        " ".join(
            rng.choice(WORDS[y], 4).tolist() + rng.choice(WORDS["good" if y == "bad" else "bad"], 1).tolist()
        )
        + str(rng.choice([".", "!!", " -- 2x", ""]))
        for y in label
    ]
    frame.loc[rng.random(n) < 0.1, "note"] = None  # a missing text: an empty document
    frame["state"] = label
    frame["power"] = a * 3 + frame["b"] + (frame["colour"] == "blue") * 2 + rng.normal(size=n) * 0.1
    frame["fault"] = np.abs(a) > 1.8
    if unseen:
        frame.loc[:2, "colour"] = "purple"
    return frame


def spec_for(cell: Cell, name: str) -> dict[str, Any]:
    columns: dict[str, Any] = {"ts": {"type": "timestamp", "nullable": False}}
    row: list[dict[str, str]] = []
    if "numeric" in cell.inputs:
        columns |= {"a": {"type": "float"}, "b": {"type": "int"}, "on": {"type": "bool"}}
        row.append({"name": "ab", "expr": "a * b"})
    if "categorical" in cell.inputs:
        columns["colour"] = {"type": "category"}
    if "timestamp" in cell.inputs:
        row.append({"name": "hour_of_day", "expr": "hour(ts)"})
    if "text" in cell.inputs:
        columns["note"] = {"type": "text"}
    target = {
        "classification": "state",
        "text-classification": "state",
        "regression": "power",
        "anomaly": "fault",
    }.get(cell.task)
    if target:
        columns[target] = {"type": {"state": "category", "power": "float", "fault": "bool"}[target]}
    spec: dict[str, Any] = {
        "version": 1,
        "name": name,
        "sources": [{"name": "history", "kind": "file", "path": f"store://landing/{name}/*.csv"}],
        "schema": {"timestamp": "ts", "columns": columns},
        "features": {"row": row},
        "task": cell.task,
        "search": {
            "families": [cell.family],
            "trials": 1,
            "scheduler": "fifo",
            "space": {cell.family: SPACE[cell.family]} if cell.family in SPACE else {},
        },
        "profiles": [PROFILE[cell.runtime]],
    }
    if target:
        spec["target"] = target
    return spec


def _json(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.bool_ | bool):
        return float(value)  # a bool input takes 0/1
    return value.item() if isinstance(value, np.generic) else value


def _records(frame: pd.DataFrame, inputs: list[str]) -> list[dict[str, Any]]:
    return [{k: _json(v) for k, v in rec.items()} for rec in frame[inputs].to_dict("records")]


def _native(home: Path, name: str) -> Any:
    """The registered model, as the pipeline registered it."""
    from edgeml.export.run import resolve_model_version
    from edgeml.settings import load_settings
    from edgeml.train.tracking import tracking_uri

    settings = load_settings({"EDGEML_HOME": str(home)})
    return resolve_model_version(f"models:/{name}/1", tracking_uri(settings, None))[-1]


def _check(task: str, model: Any, X: pd.DataFrame, answers: list[dict[str, Any]], target: str | None) -> None:
    """Each answer (one per row, as /predict shapes them) is the native model's."""
    assert len(answers) == len(X)
    if task in ("classification", "text-classification"):
        labels = model.predict(X).astype(str)
        proba = model.predict_proba(X)
        classes = [str(c) for c in model[-1].classes_]
        for i, answer in enumerate(answers):
            assert answer["label"] == labels[i]
            got = [answer["probabilities"][c] for c in classes]
            np.testing.assert_allclose(got, proba[i], atol=1e-4)
    elif task == "regression":
        expected = model.predict(X)
        scale = max(1.0, float(np.abs(expected).max()))
        got = np.array([a[target] for a in answers], dtype=np.float64)
        assert np.abs(got - expected).max() / scale <= 1e-4
    elif task == "clustering":
        assert [a["cluster"] for a in answers] == model.predict(X).tolist()
    else:
        assert [a[target] for a in answers] == model.predict(X).tolist()
        scores = model[-1].score_samples(model[:-1].transform(X))
        np.testing.assert_allclose([a["anomaly_score"] for a in answers], scores, atol=1e-4)


def _v2_answers(
    agent: Any, name: str, records: list[dict[str, Any]], layout: Any, labels: list[str]
) -> list[dict[str, Any]]:
    """The same rows as OIP v2 tensors (times as epoch seconds), answers shaped as /predict's."""
    inputs = []
    for column in layout.columns:
        values = [r.get(column) for r in records]
        if column in layout.time:
            values = [pd.Timestamp(v).timestamp() for v in values]
        strings = column in layout.categorical or column in layout.text
        datatype = "BYTES" if strings else "FP64"
        inputs.append({"name": column, "shape": [len(values), 1], "datatype": datatype, "data": values})
    response = agent.client.post(f"/v2/models/{name}/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    answers: list[dict[str, Any]] = [{} for _ in records]
    for out in response.json()["outputs"]:
        data = np.asarray(out["data"], dtype=object).reshape(out["shape"])
        for i in range(len(records)):
            value = data[i].tolist() if data.ndim > 1 else data[i]
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            answers[i][out["name"]] = value
    for answer in answers:
        if "probabilities" in answer:
            answer["probabilities"] = dict(zip(labels, answer["probabilities"], strict=True))
    return answers


def _mqtt_answers(mosquitto: Any, records: list[dict[str, Any]], topic: str) -> list[dict[str, Any]]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(f"{topic}/out", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda c, u, msg: received.append(json.loads(msg.payload))
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        assert subscribed.wait(5)
        for i, record in enumerate(records):  # one at a time: answers come back in order
            client.publish(f"{topic}/in", json.dumps(record), qos=1)
            deadline = time.monotonic() + 10
            while len(received) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(received) == i + 1, f"no MQTT answer to reading {i}"
    finally:
        client.loop_stop()
        client.disconnect()
    answers = []
    for message in received:
        if "label" in message:
            answers.append({"label": message["label"], "probabilities": message["probabilities"]})
        else:
            answers.append(message["outputs"])
    return answers


@pytest.mark.slow
@pytest.mark.parametrize("cell", RUNNABLE, ids=[c.id for c in RUNNABLE])
def test_a_runnable_cell_reaches_the_device_and_answers_as_the_model(
    cell: Cell,
    ray_local: None,
    clean_env: Path,
    mosquitto: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:

    name = cell.id.replace("_", "-").replace("text-classification", "text")
    landing = clean_env / "store" / "landing" / name
    landing.mkdir(parents=True)
    rows(240, 1).to_csv(landing / "data.csv", index=False)
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec_for(cell, name), sort_keys=False))
    assert main(["spec", "check", str(spec_path)]) == 0
    code = main(["pipeline", "run", str(spec_path)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert f"stable → {name} v1" in out.out

    answers_as_the_model(
        clean_env, tmp_path, mosquitto, spec_path, PROFILE[cell.runtime], rows(12, 7, unseen=True)
    )


def answers_as_the_model(
    home: Path, tmp_path: Path, mosquitto: Any, spec_path: Path, profile: str, fresh: pd.DataFrame
) -> None:
    """An agent pulls the published v1 of the spec's model for ``profile`` and answers ``fresh``
    over /predict, OIP v2 and MQTT as the registered model does; a wrong type is a 422 naming the input."""
    from agent.test_agent_run import AgentProcess
    from edgeml.agent.config import AgentConfig
    from edgeml.bundle.keys import export_public
    from edgeml.spec.loader import load_spec
    from edgeml.train.pipeline import input_layout

    spec = load_spec(spec_path)
    name = spec.name
    ring = tmp_path / "keyring"
    export_public(home, ring)
    config = AgentConfig.model_validate(
        {
            "device_id": "dev-1",
            "profile": profile,
            "model": name,
            "store": {"url": (home / "store").as_uri()},
            "keyring": str(ring),
            "state_dir": str(tmp_path / "device"),
            "sync": {"interval_s": 0.2, "health_window_s": 0},
            "http": {"port": 0},
            "mqtt": {"broker": mosquitto.url, "topic_in": f"{name}/in", "topic_out": f"{name}/out"},
        }
    )
    agent = AgentProcess(config, tmp_path / "agent.yaml")
    try:
        agent.wait_for_version(1)
        layout = input_layout(spec)
        records = _records(fresh, layout.columns)
        X = fresh[layout.columns].copy()
        for column in layout.time:
            X[column] = pd.to_datetime(X[column], utc=True).map(lambda t: t.timestamp())
        for column in layout.text:
            X[column] = X[column].fillna("")
        for column in layout.numeric:
            X[column] = X[column].astype(np.float64)
        model = _native(home, name)

        predicted = agent.client.post("/predict", json={"records": records})
        assert predicted.status_code == 200, predicted.text
        _check(spec.task, model, X, predicted.json()["predictions"], spec.target)

        labels = [str(c) for c in getattr(model[-1], "classes_", [])]
        _check(spec.task, model, X, _v2_answers(agent, name, records, layout, labels), spec.target)

        _check(spec.task, model, X, _mqtt_answers(mosquitto, records, name), spec.target)

        wrong = dict(records[0])
        wrong[layout.columns[0]] = [1, 2]  # a list where a value belongs: refused, naming the input
        refused = agent.client.post("/predict", json={"records": [wrong]})
        assert refused.status_code == 422
        assert layout.columns[0] in refused.text
    finally:
        agent.stop()


@pytest.mark.parametrize("cell", REFUSED, ids=[c.id for c in REFUSED])
def test_a_refused_cell_is_refused_by_spec_check(
    cell: Cell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "refused.yaml"
    cell_with_inputs = Cell(cell.task, cell.family, cell.runtime, ("numeric",), None)
    spec_path.write_text(yaml.safe_dump(spec_for(cell_with_inputs, "refused"), sort_keys=False))
    assert main(["spec", "check", str(spec_path)]) == 2
    err = capsys.readouterr().err
    assert f"cannot run {cell.family}" in err


def test_the_support_page_is_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    page = (ROOT / "docs" / "support-matrix.md").read_text()
    assert page == render_markdown((p.name, p.runtime) for p in load_profiles().values()), (
        "regenerate with `edgeml spec matrix --out docs/support-matrix.md`"
    )
    assert main(["spec", "matrix"]) == 0
    assert capsys.readouterr().out == page
    assert "docs/support-matrix.md" in (ROOT / "README.md").read_text()
