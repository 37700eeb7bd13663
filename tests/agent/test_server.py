"""The agent's HTTP API: OIP v2 and /predict, bad input, limits, metrics, swaps under load."""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from bundle.conftest import make_manifest, write_model
from edgeml.agent.inputs import Batch
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.server import (
    _TALLY_EVERY,
    Serving,
    _predict_writer,
    _Served,
    create_app,
    flush_metrics,
)
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.observability import REGISTRY

from .classifier import LABELS, faults_classifier
from .conftest import with_golden

# --- models -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regressors(tmp_path_factory: pytest.TempPathFactory) -> dict[int, LoadedModel]:
    """v1 and v2 of the small test model: same inputs, different weights, so different outputs."""
    out = {}
    for version in (1, 2):
        folder = tmp_path_factory.mktemp(f"regressor-v{version}")
        files = write_model(folder, seed=version)
        out[version] = LoadedModel(folder, with_golden(make_manifest(files, version), folder))
    return out


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A trained scikit-learn pipeline (float32 numbers, a category, labels) exported by skl2onnx."""
    folder = tmp_path_factory.mktemp("classifier")
    return LoadedModel(folder, faults_classifier(folder))


def serving(model: LoadedModel | None, **limits: int) -> tuple[ModelHolder, Starlette]:
    holder = ModelHolder()
    if model is not None:
        holder.swap(model)
    return holder, create_app(holder, **limits)


def call(app: Starlette, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request through httpx's ASGI transport."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def count(protocol: str, outcome: str, model: str = "pump", version: str = "1") -> float:
    flush_metrics()  # answers are tallied and counted in bulk; /metrics flushes them too
    labels = {"model": model, "version": version, "protocol": protocol, "outcome": outcome}
    return REGISTRY.get_sample_value("edgeml_inference_requests_total", labels) or 0.0


def rows_counted(model: str = "pump", version: str = "1") -> float:
    flush_metrics()
    return (
        REGISTRY.get_sample_value("edgeml_inference_rows_total", {"model": model, "version": version}) or 0.0
    )


def infer_body(rows: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [len(rows), 1], "datatype": "FP64", "data": [r[0] for r in rows]},
            {"name": "b", "shape": [len(rows), 1], "datatype": "FP64", "data": [r[1] for r in rows]},
        ]
    }


class Recorder:
    """An observer (as telemetry is one): what the server told it."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, dict[str, Any], dict[str, Any], float]] = []
        self.errors: list[tuple[int | None, str]] = []
        self.polls = 0

    def take(self, entry: tuple[Any, ...]) -> None:
        if len(entry) == 2:
            model, kind = entry
            self.errors.append((model.version if model else None, kind))
        else:
            model, columns, outputs, latency_s, _ = entry
            self.seen.append((model.version, dict(columns), dict(outputs), latency_s))

    def poll(self) -> None:
        self.polls += 1


# --- health, metadata ---------------------------------------------------------------------


def test_health_turns_ready_when_a_model_is_swapped_in(regressors: dict[int, LoadedModel]) -> None:
    holder, app = serving(None)
    assert call(app, "GET", "/v2/health/live").status_code == 200
    assert call(app, "GET", "/v2/health/ready").status_code == 503
    assert call(app, "GET", "/v2/models/pump").status_code == 503
    assert call(app, "GET", "/v2/models/pump/ready").status_code == 503
    before = count("predict", "not_ready", "", "")
    answer = call(app, "POST", "/predict", json={"a": 1.0, "b": 2.0})
    assert answer.status_code == 503
    assert answer.json() == {"error": "no model is loaded yet"}
    assert count("predict", "not_ready", "", "") == before + 1
    holder.swap(regressors[1])
    assert call(app, "GET", "/v2/health/ready").json() == {"ready": True}
    assert call(app, "GET", "/v2/models/pump/ready").json() == {"name": "pump", "ready": True}
    assert call(app, "GET", "/v2/models/other/ready").status_code == 404


def test_server_and_model_metadata(classifier: LoadedModel) -> None:
    _, app = serving(classifier)
    server = call(app, "GET", "/v2").json()
    assert server["name"] == "edgeml"
    assert server["version"]
    meta = call(app, "GET", "/v2/models/faults").json()
    assert meta["name"] == "faults"
    assert meta["versions"] == ["3"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "temperature", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "vibration", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "machine", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ]
    assert call(app, "GET", "/v2/models/faults/versions/3").json() == meta
    missing = call(app, "GET", "/v2/models/faults/versions/4")
    assert missing.status_code == 404
    assert "version '4'" in missing.json()["error"]
    assert call(app, "GET", "/v2/models/pump").status_code == 404


# --- answers ------------------------------------------------------------------------------


def test_predict_gives_a_label_and_probabilities_per_row(classifier: LoadedModel) -> None:
    _, app = serving(classifier)
    records = [
        {"temperature": 95.0, "vibration": 1.0, "machine": "m2"},
        {"temperature": 50.0, "vibration": 6.0},  # machine left out: nullable
        {"temperature": 50.0, "vibration": None, "machine": None},
    ]
    answer = call(app, "POST", "/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["model"] == "faults"
    assert body["version"] == 3
    labels = [p["label"] for p in body["predictions"]]
    assert labels[:2] == ["overheating", "bearing_wear"]
    for prediction in body["predictions"]:
        assert list(prediction["probabilities"]) == LABELS
        assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-5)
        assert max(prediction["probabilities"], key=prediction["probabilities"].get) == prediction["label"]
    one = call(app, "POST", "/predict", json=records[0]).json()  # a single object is one row
    assert one["predictions"] == body["predictions"][:1]


def test_v2_infer_answers_per_the_protocol(classifier: LoadedModel) -> None:
    _, app = serving(classifier)
    request = {
        "id": "req-7",
        "inputs": [
            {"name": "temperature", "shape": [2, 1], "datatype": "FP32", "data": [95.0, 50.0]},
            {"name": "vibration", "shape": [2], "datatype": "FP64", "data": [1.0, 6.0]},
            {"name": "machine", "shape": [2, 1], "datatype": "BYTES", "data": [["m1"], ["m3"]]},
        ],
    }
    for path in ("/v2/models/faults/infer", "/v2/models/faults/versions/3/infer"):
        answer = call(app, "POST", path, json=request)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_name"] == "faults"
        assert body["model_version"] == "3"
        assert body["id"] == "req-7"
        label, proba = body["outputs"]
        assert label == {
            "name": "label",
            "datatype": "BYTES",
            "shape": [2],
            "data": ["overheating", "bearing_wear"],
        }
        assert proba["name"] == "probabilities"
        assert proba["datatype"] == "FP32"
        assert proba["shape"] == [2, 3]
        assert len(proba["data"]) == 6
    only = call(
        app, "POST", "/v2/models/faults/infer", json={**request, "outputs": [{"name": "probabilities"}]}
    )
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]


def test_json_binary_and_grpc_requests_share_answers_and_observers(classifier: LoadedModel) -> None:
    """One decode per wire form, then the same validation, model run, telemetry and metrics."""
    from edgeml.agent import oip
    from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb

    holder, _ = serving(classifier)
    recorder = Recorder()
    holder.watch(recorder)
    service = Serving(holder)
    temperature, vibration, machine = [95.0, 50.0], [1.0, 6.0], ["m1", "m3"]
    as_json = {
        "inputs": [
            {"name": "temperature", "shape": [2, 1], "datatype": "FP32", "data": temperature},
            {"name": "vibration", "shape": [2, 1], "datatype": "FP32", "data": vibration},
            {"name": "machine", "shape": [2, 1], "datatype": "BYTES", "data": machine},
        ]
    }
    raws = [
        np.array(temperature, dtype="<f4").tobytes(),
        np.array(vibration, dtype="<f4").tobytes(),
        oip.tensor_bytes(np.array(machine, dtype=object), "BYTES"),
    ]
    header = {
        "inputs": [
            {k: v for k, v in t.items() if k != "data"} | {"parameters": {"binary_data_size": len(raw)}}
            for t, raw in zip(as_json["inputs"], raws, strict=True)
        ],
        "parameters": {"binary_data_output": True},
    }
    text = orjson.dumps(header)
    grpc_request = pb.ModelInferRequest(model_name="faults", raw_input_contents=raws)
    for t in as_json["inputs"]:
        grpc_request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])

    plain = service.infer("faults", None, orjson.dumps(as_json))
    binary = service.infer("faults", None, text + b"".join(raws), header_length=str(len(text)))
    over_grpc = service.infer_grpc(grpc_request)
    assert (plain.status, binary.status, over_grpc.status) == (200, 200, 200)

    # the binary answer: JSON with binary_data_size per output, then the tensors' bytes
    assert binary.header_length is not None
    head = orjson.loads(binary.body[: binary.header_length])
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    section = binary.body[binary.header_length :]
    assert len(section) == sum(sizes)
    labels = oip.from_bytes("label", "BYTES", section[: sizes[0]])
    proba = np.frombuffer(section[sizes[0] :], dtype="<f4")
    json_outputs = {o["name"]: o["data"] for o in orjson.loads(plain.body)["outputs"]}
    assert labels == json_outputs["label"] == ["overheating", "bearing_wear"]
    np.testing.assert_array_equal(proba, np.array(json_outputs["probabilities"], dtype=np.float32))

    response = pb.ModelInferResponse.FromString(over_grpc.body)
    assert oip.from_bytes("label", "BYTES", response.raw_output_contents[0]) == labels
    assert response.raw_output_contents[1] == section[sizes[0] :]

    assert len(recorder.seen) == 3
    for _, columns, _, _ in recorder.seen:
        assert list(columns["machine"]) == machine
        np.testing.assert_array_equal(columns["temperature"], temperature)


def test_a_regressor_answers_its_output_per_row(regressors: dict[int, LoadedModel]) -> None:
    _, app = serving(regressors[1])
    expected = regressors[1].predict({"a": [1.0, -2.0], "b": [0.5, 3.0]})["variable"].ravel().tolist()
    body = call(app, "POST", "/predict", json=[{"a": 1.0, "b": 0.5}, {"a": -2.0, "b": 3.0}]).json()
    assert body["predictions"] == [{"variable": v} for v in expected]
    v2 = call(app, "POST", "/v2/models/pump/infer", json=infer_body([(1.0, 0.5), (-2.0, 3.0)])).json()
    assert v2["outputs"] == [{"name": "variable", "datatype": "FP64", "shape": [2, 1], "data": expected}]


def _no_id(answer: Any) -> tuple[int, Any]:
    """An answer's status and JSON without its id (each answer gets its own)."""
    body = orjson.loads(answer.body)
    assert isinstance(body.pop("id"), str)
    return answer.status, body


def test_a_caller_with_decoded_json_gets_the_same_answers(regressors: dict[int, LoadedModel]) -> None:
    holder, _ = serving(regressors[1])
    service = Serving(holder)
    record = {"a": 1.0, "b": 0.5}
    assert _no_id(service.predict(data=record)) == _no_id(service.predict(json.dumps(record).encode()))
    request = infer_body([(1.0, 0.5)])
    assert _no_id(service.infer("pump", None, data=request)) == _no_id(
        service.infer("pump", None, json.dumps(request).encode())
    )
    assert service.predict(data={"a": 11.0}).status == 422


def test_one_row_answers_the_same_bytes_as_the_general_path(classifier: LoadedModel) -> None:
    holder, _ = serving(classifier)
    service = Serving(holder)
    rows = [
        {"temperature": 95.0, "vibration": 1.0, "machine": "m2"},
        {"temperature": 50.0, "vibration": 6.5, "machine": "m1"},
        {"temperature": 61.25, "vibration": 3, "machine": "m3"},
    ]
    for row in rows:
        fast = service.predict(data=row)  # one record: the fast path end to end
        assert _no_id(fast) == _no_id(service.predict(data=[row]))  # a bare list: the general parsing path
        served = service._state(classifier)
        batch = served.schema.parse_records(row)
        outputs = classifier.runtime.run(batch.feeds)
        answer_id = orjson.loads(fast.body)["id"]
        assert fast.body == served._predict_answer(batch, outputs, answer_id)  # the general answer writer
        # the general writer writes one row as it writes each of many
        twice = {name: np.concatenate([array, array]) for name, array in outputs.items()}
        one = orjson.dumps(served.predictions(batch, outputs), option=orjson.OPT_SERIALIZE_NUMPY)
        many = orjson.dumps(
            served.predictions(batch._replace(rows=2), twice), option=orjson.OPT_SERIALIZE_NUMPY
        )
        assert many == one[:-1] + b"," + one[1:-1] + b"]"


def _general_answer(name: str, version: int, labels: list[str]) -> Any:
    """The general ``/predict`` answer writer of a served model with these labels."""
    served: Any = SimpleNamespace(model=SimpleNamespace(name=name, version=version), labels=labels)
    served._n_labels = len(labels)
    served.predictions = lambda batch, outputs: _Served.predictions(served, batch, outputs)
    return lambda batch, outputs, answer_id: _Served._predict_answer(served, batch, outputs, answer_id)


FLOATS = st.floats(width=32) | st.sampled_from([0.0, -0.0, 1e-45, 1e-5, 0.1, 1 / 3, 1e30])


@st.composite
def _classifier_outputs(draw: st.DrawFn) -> tuple[list[str], dict[str, np.ndarray], int]:
    """Labels, and outputs the one-row shortcut takes or leaves (shapes, dtypes, values)."""
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
    labels = draw(st.lists(text | st.sampled_from(["%s", "%b", '"q"', "%%"]), min_size=1, max_size=4))
    n = len(labels)
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64]))
    shape = draw(st.sampled_from([(1, n), (1, n), (n,), (2, n)]))
    values = draw(st.lists(FLOATS, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    with np.errstate(over="ignore", invalid="ignore"):
        proba = np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
    if draw(st.booleans()):
        proba = np.asfortranarray(np.repeat(proba, 2, axis=-1))[..., ::2]  # not contiguous
    label = draw(st.sampled_from(labels) | text | st.integers(-5, 5))
    predicted = np.array([label], dtype=object if isinstance(label, str) else np.int64)
    return labels, {"label": predicted, "probabilities": proba}, shape[0] if len(shape) == 2 else 1


@settings(max_examples=400, deadline=None)
@given(
    case=_classifier_outputs(), name=st.sampled_from(["faults", "50% off", 'a"b']), version=st.integers(1, 99)
)
def test_the_one_row_answer_shortcut_writes_what_the_general_writer_does(
    case: tuple[list[str], dict[str, np.ndarray], int], name: str, version: int
) -> None:
    labels, outputs, rows = case
    general = _general_answer(name, version, labels)
    write = _predict_writer(name, version, labels, general)
    batch = Batch(rows, {}, {})

    def outcome(writer: Any) -> Any:
        try:
            return writer(batch, outputs, "0a1b-2c")
        except Exception as exc:  # the general writer refuses some (e.g. rows and shapes at odds)
            return type(exc)

    assert outcome(write) == outcome(general)


def test_threads_answering_one_rows_at_once_never_share_feed_buffers(
    regressors: dict[int, LoadedModel],
) -> None:
    holder, _ = serving(regressors[1])
    service = Serving(holder)
    rows = [{"a": i / 10, "b": -i / 7} for i in range(40)]
    expected = [_no_id(service.predict(data=row)) for row in rows]
    wrong: list[int] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            i = rng.randrange(len(rows))
            if _no_id(service.predict(data=rows[i])) != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wrong == []


def test_telemetry_counts_one_row_and_many_row_requests_alike(classifier: LoadedModel) -> None:
    holder, _ = serving(classifier)
    telemetry = TelemetryWindow("device-1", window_rows=10_000)
    holder.watch(telemetry)
    service = Serving(holder)
    row = {"temperature": 95.0, "vibration": 1.0, "machine": "m2"}
    for _ in range(300):
        assert service.predict(data=row).status == 200  # one-row requests: columns are lists
    assert service.predict(data=[row, {**row, "machine": None}]).status == 200  # arrays
    assert service.predict(data={**row, "vibration": None}).status == 200  # one row, general path
    (batch,) = telemetry.flush()
    assert batch.rows == 303
    assert batch.requests == 302
    assert batch.predictions == {"overheating": 303}
    assert batch.features["machine"].missing == 1
    assert batch.features["vibration"].missing == 1


def test_a_swapped_out_model_is_let_go(regressors: dict[int, LoadedModel]) -> None:
    import gc
    import weakref

    first = regressors[1]
    holder, _ = serving(LoadedModel(first.folder, first.manifest))
    service = Serving(holder)
    assert service.predict(data={"a": 1.0, "b": 1.0}).status == 200
    gone = weakref.ref(holder.current)  # type: ignore[arg-type]
    holder.swap(regressors[2])
    assert service.predict(data={"a": 1.0, "b": 1.0}).status == 200
    gc.collect()
    assert gone() is None  # nothing of the serving state keeps the old model (and its session)


def test_observers_hear_of_answers_and_errors(regressors: dict[int, LoadedModel]) -> None:
    holder, app = serving(regressors[1])
    recorder = Recorder()
    holder.watch(recorder)
    call(app, "POST", "/predict", json={"records": [{"a": 1.0, "b": None}, {"a": 2.0, "b": 3.0}]})
    call(app, "POST", "/predict", json={"a": 100.0, "b": 1.0})
    call(app, "POST", "/predict", content=b"x" * 2000)
    version, columns, outputs, latency = recorder.seen[0]
    assert version == 1
    assert columns["a"].tolist() == [1.0, 2.0]
    assert np.isnan(columns["b"][0])
    assert outputs["variable"].shape == (2, 1)
    assert 0 < latency < 1
    assert recorder.errors == [(1, "bad-input"), (1, "bad-input")]


def test_metrics_count_requests_rows_and_latency(regressors: dict[int, LoadedModel]) -> None:
    _, app = serving(regressors[1])
    ok, bad, rows = count("v2", "ok"), count("v2", "bad_input"), rows_counted()
    call(app, "POST", "/v2/models/pump/infer", json=infer_body([(1.0, 1.0)] * 3))
    call(app, "POST", "/v2/models/pump/infer", json={"inputs": []})
    answer = call(app, "GET", "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert 'edgeml_inference_latency_seconds_count{model="pump",version="1"}' in answer.text
    # the scrape saw the answer: /metrics counts the tallied answers before it renders
    assert (
        f'edgeml_inference_requests_total{{model="pump",outcome="ok",protocol="v2",version="1"}} {ok + 1}'
        in answer.text
    )
    assert count("v2", "ok") == ok + 1
    assert count("v2", "bad_input") == bad + 1
    assert rows_counted() == rows + 3


def test_answers_are_counted_in_bulk_as_each_alone_would_be(regressors: dict[int, LoadedModel]) -> None:
    holder, _ = serving(regressors[1])
    service = Serving(holder)
    labels = {"model": "pump", "version": "1"}
    latency = "edgeml_inference_latency_seconds"
    ok, rows = count("predict", "ok"), rows_counted()
    seen = REGISTRY.get_sample_value(f"{latency}_count", labels) or 0.0
    answers = 2 * _TALLY_EVERY + 22  # over two tallies' worth: some counted on the way, the rest at the flush
    for n in range(answers):
        assert service.predict(data={"a": (n % 200) / 20, "b": 1.0}).status == 200
    assert count("predict", "ok") == ok + answers
    assert rows_counted() == rows + answers
    assert REGISTRY.get_sample_value(f"{latency}_count", labels) == seen + answers


def test_a_model_failing_at_run_time_is_a_counted_500(regressors: dict[int, LoadedModel]) -> None:
    # The manifest says float32 while the graph takes doubles: ONNX Runtime refuses the feed.
    good = regressors[1]
    wrong = good.manifest.model_copy(
        update={
            "version": 9,
            "inputs": [f.model_copy(update={"dtype": "float32"}) for f in good.manifest.inputs],
        }
    )
    holder, app = serving(LoadedModel(good.folder, wrong))
    recorder = Recorder()
    holder.watch(recorder)
    before = count("predict", "error", version="9")
    answer = call(app, "POST", "/predict", json={"a": 1.0, "b": 2.0})
    assert answer.status_code == 500
    assert answer.json()["error"].startswith("the model failed:")
    assert count("predict", "error", version="9") == before + 1
    assert recorder.errors == [(9, "runtime")]


# --- bad input ------------------------------------------------------------------------------

V2 = "/v2/models/pump/infer"
BAD = [
    # (case, method, path, request kwargs, status, field)
    ("unknown input", "POST", "/predict", {"json": {"a": 1.0, "b": 1.0, "c": 2.0}}, 422, "c"),
    (
        "missing required (v2)",
        "POST",
        V2,
        {"json": {"inputs": infer_body([(1.0, 1.0)])["inputs"][1:]}},
        422,
        "a",
    ),
    ("wrong type", "POST", "/predict", {"json": {"a": "1.0", "b": 1.0}}, 422, "a"),
    (
        "wrong datatype",
        "POST",
        V2,
        {"json": {"inputs": [{"name": "a", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]}]}},
        422,
        "a",
    ),
    (
        "datatype not a string",
        "POST",
        V2,
        {"json": {"inputs": [{"name": "a", "shape": [1, 1], "datatype": ["FP64"], "data": [1.0]}]}},
        422,
        "a",
    ),
    (
        "wrong shape",
        "POST",
        V2,
        {"json": {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}},
        422,
        "a",
    ),
    (
        "inconsistent rows",
        "POST",
        V2,
        {
            "json": {
                "inputs": [
                    {"name": "a", "shape": [1, 1], "datatype": "FP64", "data": [1.0]},
                    {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]},
                ]
            }
        },
        422,
        "b",
    ),
    ("NaN where not nullable", "POST", "/predict", {"content": b'{"a": NaN, "b": 1}'}, 422, "a"),
    ("infinity", "POST", "/predict", {"content": b'{"a": 1, "b": -Infinity}'}, 422, "b"),
    ("above max", "POST", "/predict", {"json": {"a": 10.5, "b": 1.0}}, 422, "a"),
    ("below min", "POST", V2, {"json": infer_body([(-11.0, 1.0)])}, 422, "a"),
    ("too many rows", "POST", "/predict", {"json": [{"a": 1.0, "b": 1.0}] * 9}, 422, "records"),
    (
        "unknown output",
        "POST",
        V2,
        {"json": {**infer_body([(1.0, 1.0)]), "outputs": [{"name": "y"}]}},
        422,
        "outputs",
    ),
    ("malformed JSON", "POST", "/predict", {"content": b'{"a": 1,'}, 400, "body"),
    ("not UTF-8", "POST", "/predict", {"content": b'{"a": "\xff"}'}, 400, "body"),
    ("empty body", "POST", V2, {"content": b""}, 400, "body"),
    (
        "bad Content-Length",
        "POST",
        "/predict",
        {"content": b"{}", "headers": {"content-length": "x"}},
        400,
        None,
    ),
    ("unknown model", "POST", "/v2/models/other/infer", {"json": infer_body([(1.0, 1.0)])}, 404, None),
    (
        "unknown version",
        "POST",
        "/v2/models/pump/versions/2/infer",
        {"json": infer_body([(1.0, 1.0)])},
        404,
        None,
    ),
    ("wrong method", "GET", "/predict", {}, 405, None),
    ("wrong method (v2)", "DELETE", V2, {}, 405, None),
    ("unknown route", "POST", "/v1/models/pump:predict", {"json": {}}, 404, None),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_requests_are_4xx_naming_the_field(
    regressors: dict[int, LoadedModel],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    # The small model: a is required and within [-10, 10], b is nullable.
    manifest = regressors[1].manifest
    strict = manifest.model_copy(
        update={"inputs": [manifest.inputs[0].model_copy(update={"nullable": False}), manifest.inputs[1]]}
    )
    _, app = serving(LoadedModel(regressors[1].folder, strict), max_rows=8)
    answer = call(app, method, path, **kwargs)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["error"]
    if field is not None:
        assert body["field"] == field


async def _chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    for _ in range(total // size):
        yield b" " * size


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_is_413_by_header_or_while_streaming(
    regressors: dict[int, LoadedModel], chunked: bool
) -> None:
    holder, app = serving(regressors[1], max_body_bytes=4096)
    recorder = Recorder()
    holder.watch(recorder)
    before = count("predict", "too_large")
    content: Any = _chunks(10_000) if chunked else b" " * 10_000
    answer = call(app, "POST", "/predict", content=content)
    assert answer.status_code == 413
    assert answer.json()["field"] == "body"
    assert count("predict", "too_large") == before + 1
    assert recorder.errors == [(1, "too-large")]
    assert call(app, "POST", "/predict", json={"a": 1.0, "b": 1.0}).status_code == 200  # within the limit


def test_a_big_batch_runs_off_the_event_loop_and_answers_every_row(
    regressors: dict[int, LoadedModel],
) -> None:
    _, app = serving(regressors[1])
    records = [{"a": (i % 20) - 10.0, "b": float(i)} for i in range(1024)]
    body = call(app, "POST", "/predict", json={"records": records}).json()
    assert len(body["predictions"]) == 1024


# --- fuzzing: bad input never makes a 5xx ---------------------------------------------------

JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
JSONISH = st.recursive(
    JSON_LEAVES | st.sampled_from(["a", "b", "FP64", "BYTES", "inputs", "records"]),
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["a", "b", "records", "inputs", "name", "shape", "datatype", "data", "outputs", "id"]
            )
            | st.text(max_size=5),
            kids,
            max_size=5,
        )
    ),
    max_leaves=30,
)
BODIES = (
    JSONISH.map(lambda v: json.dumps(v).encode())  # json.dumps writes NaN and Infinity too
    | st.binary(max_size=200)
    | st.builds(
        lambda a, b, dt, shape: json.dumps(
            {"inputs": [{"name": "a", "shape": shape, "datatype": dt, "data": a}, {"name": "b", **b}]}
        ).encode(),
        st.lists(JSON_LEAVES, max_size=4),
        st.fixed_dictionaries(
            {"shape": st.lists(st.integers(-2, 4), max_size=3), "datatype": st.text(max_size=5)}
        ),
        st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL"]),
        st.lists(st.integers(-2, 4), max_size=3),
    )
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, route=st.sampled_from(["predict", "infer", "infer-version"]))
def test_no_body_makes_a_server_error(regressors: dict[int, LoadedModel], body: bytes, route: str) -> None:
    holder = ModelHolder()
    holder.swap(regressors[1])
    service = Serving(holder, max_rows=16)
    if route == "predict":
        answer = service.predict(body)
    else:
        answer = service.infer("pump", "1" if route == "infer-version" else None, body)
    assert answer.status in (200, 400, 404, 413, 422), answer
    assert json.loads(answer.body)


BINARY_TENSORS = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["a", "b", "c"]),
            "shape": st.lists(st.integers(-1, 3), max_size=3),
            "datatype": st.sampled_from(["FP64", "FP32", "FP16", "INT8", "UINT64", "BYTES", "BOOL", "X"]),
            "parameters": st.fixed_dictionaries(
                {"binary_data_size": st.integers(-2, 24) | st.text(max_size=2)}
            ),
        }
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tensors=BINARY_TENSORS,
    binary=st.binary(max_size=48),
    skew=st.integers(-3, 3),
    output=st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1),  # what a JSON client can send
)
def test_no_binary_body_makes_a_server_error(
    regressors: dict[int, LoadedModel], tensors: list[dict[str, Any]], binary: bytes, skew: int, output: Any
) -> None:
    holder = ModelHolder()
    holder.swap(regressors[1])
    service = Serving(holder, max_rows=16)
    request: dict[str, Any] = {"inputs": tensors}
    if output is not None:
        request["parameters"] = {"binary_data_output": output}
    text = orjson.dumps(request)
    answer = service.infer("pump", None, text + binary, header_length=str(max(0, len(text) + skew)))
    assert answer.status in (200, 400, 404, 413, 422), answer
    if answer.status != 200:
        assert orjson.loads(answer.body)["error"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(["/predict", "/v2", "/v2/models/pump", "/v2/models/pump/infer", "/v2/health/ready"])
    # a path starting "//" is not a request an HTTP client can send (httpx refuses to build it)
    | st.text(alphabet="abcv2/{}%.-_", max_size=25)
    .map(lambda p: "/" + p)
    .filter(lambda p: not p.startswith("//")),
    body=st.binary(max_size=64),
)
def test_no_route_method_or_path_makes_a_server_error(
    regressors: dict[int, LoadedModel], method: str, path: str, body: bytes
) -> None:
    _, app = serving(regressors[1])
    assert call(app, method, path, content=body).status_code < 500


# --- a real server --------------------------------------------------------------------------


@contextmanager
def uvicorn_server(app: Starlette) -> Iterator[str]:
    """The app on a real uvicorn (httptools, no access log) on 127.0.0.1, stopped on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http="httptools", access_log=False, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


def test_a_real_server_answers_and_refuses_a_chunked_oversized_body(classifier: LoadedModel) -> None:
    _, app = serving(classifier, max_body_bytes=2048)
    with uvicorn_server(app) as url, httpx.Client(base_url=url) as client:
        answer = client.post("/predict", json={"temperature": 90.0, "vibration": 1.0, "machine": "m1"})
        assert answer.status_code == 200
        assert answer.json()["predictions"][0]["label"] == "overheating"
        big = client.post("/predict", content=iter([b" " * 1024] * 8))  # Transfer-Encoding: chunked
        assert big.status_code == 413
        assert client.get("/v2/health/ready").status_code == 200


@pytest.mark.slow
def test_a_swap_under_load_answers_every_request_wholly_by_one_version(
    regressors: dict[int, LoadedModel],
) -> None:
    holder, app = serving(regressors[1])
    inputs = [(random.Random(i).uniform(-10, 10), random.Random(-i).uniform(-5, 5)) for i in range(20)]
    columns = {"a": [a for a, _ in inputs], "b": [b for _, b in inputs]}
    expected = {v: m.predict(columns)["variable"].ravel().tolist() for v, m in regressors.items()}
    assert expected[1] != expected[2]
    clients, per_client = 4, 520
    done = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not done.is_set():
            holder.swap(regressors[2 if swaps % 2 == 0 else 1])
            swaps += 1
            time.sleep(0.001)

    failures: list[str] = []
    versions: list[int] = []

    def client_loop(url: str, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url) as client:
            for n in range(per_client):
                i = rng.randrange(len(inputs))
                if n % 2:
                    answer = client.post("/predict", json={"a": inputs[i][0], "b": inputs[i][1]})
                    body = answer.json() if answer.status_code == 200 else {}
                    version, got = body.get("version"), body.get("predictions", [{}])[0].get("variable")
                else:
                    answer = client.post(V2, json=infer_body([inputs[i]]))
                    body = answer.json() if answer.status_code == 200 else {}
                    version = int(body["model_version"]) if body else None
                    got = body["outputs"][0]["data"][0] if body else None
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text}")
                elif got != expected[version][i]:  # type: ignore[index]
                    failures.append(f"v{version} answered {got} for row {i}, expected {expected[version][i]}")  # type: ignore[index]
                versions.append(version)  # type: ignore[arg-type]

    with uvicorn_server(app) as url:
        swapping = threading.Thread(target=swapper)
        swapping.start()
        workers = [threading.Thread(target=client_loop, args=(url, s)) for s in range(clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        done.set()
        swapping.join(10)
    assert failures == []
    assert len(versions) == clients * per_client >= 2000
    assert set(versions) == {1, 2}
    assert swaps > 100


def test_the_holder_hands_every_entry_to_every_observer_and_polls_in_bulk(
    regressors: dict[int, LoadedModel],
) -> None:
    from edgeml.agent.model import POLL_EVERY

    holder, _ = serving(regressors[1])
    first, second = Recorder(), Recorder()
    holder.watch(first, second)
    service = Serving(holder)
    for i in range(POLL_EVERY * 2 + 3):
        body = {"a": 1.0, "b": float(i)} if i % 10 else {"a": "x", "b": 1.0}
        service.predict(data=body)
    for recorder in (first, second):
        assert len(recorder.seen) + len(recorder.errors) == POLL_EVERY * 2 + 3
        assert recorder.errors == [(1, "bad-input")] * 14
        assert recorder.polls == 2  # every POLL_EVERY entries, answers and errors alike
    for one, other in zip(first.seen, second.seen, strict=True):  # the same outputs, not copies
        assert one[2].keys() == other[2].keys()
        assert all(one[2][name] is other[2][name] for name in one[2])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["m1", "ok", "", "é", "m1\x00"]) | st.text(max_size=4), max_size=40))
def test_bytes_tensors_round_trip_through_binary_data(values: list[str]) -> None:
    from edgeml.agent import oip

    raw = oip.tensor_bytes(np.array(values, dtype=object), "BYTES")
    assert len(raw) == sum(4 + len(v.encode()) for v in values)
    assert oip.from_bytes("x", "BYTES", memoryview(raw)) == values


def test_a_bytes_element_that_is_not_utf8_is_named_by_its_position() -> None:
    from edgeml.agent import oip
    from edgeml.agent.inputs import InputError

    raw = oip.tensor_bytes(np.array(["a", "a"], dtype=object), "BYTES") + b"\x02\x00\x00\x00\xff\xfe"
    with pytest.raises(InputError, match="element 2 is not UTF-8"):
        oip.from_bytes("machine", "BYTES", raw)
