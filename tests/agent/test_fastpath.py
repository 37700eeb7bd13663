"""Each trick of the agent's fast path answers exactly as the plain, public-API path does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundle.conftest import make_manifest, write_model
from edgeml.agent import fastpath
from edgeml.agent.inputs import Schema
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.oip import tensor_bytes
from edgeml.agent.runtime import ModelRuntime
from edgeml.agent.server import Serving, flush_metrics
from edgeml.observability import REGISTRY

from .classifier import faults_classifier
from .test_inputs import EDGE_RECORDS, FIELDS, _outcome

PLAIN = dict.fromkeys(fastpath.Switches.names(), False)

# --- session_run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    write_model(folder, seed=3)
    return folder


def _runtime(folder: Path, **switches: bool) -> ModelRuntime:
    with fastpath.switched(**switches):
        return ModelRuntime(folder, make_manifest(sorted(folder.iterdir())))


def test_the_cpp_run_answers_as_the_public_session_run(folder: Path) -> None:
    fast, plain = _runtime(folder), _runtime(folder, session_run=False)
    assert fast._session_run != fast._session.run  # the trick is in use here ...
    assert plain._session_run == plain._session.run  # ... and not there
    schema = Schema(fast.inputs)
    for body in ({"a": 1.5, "b": -2.0}, [{"a": 1.0, "b": 2.0}] * 3):
        batch = schema.parse_records(body)
        got, want = fast.run(batch.feeds), plain.run(batch.feeds)
        assert list(got) == list(want) == ["variable"]
        np.testing.assert_array_equal(got["variable"], want["variable"])
        Schema.release(batch)


def test_a_failing_provider_goes_through_the_public_run_then_back_to_cpp(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = _runtime(folder)
    session = runtime._session
    feeds = {"a": np.ones((1, 1)), "b": np.ones((1, 1))}
    want = _runtime(folder, session_run=False).run(feeds)["variable"]
    real = session._sess

    class Failing:
        def run(self, *_: Any) -> Any:
            raise ort.capi.onnxruntime_pybind11_state.EPFail("the provider failed")

    wrapped = []

    def wrapper_run(names: list[str], given: dict[str, Any]) -> Any:
        # as ONNX Runtime's wrapper does on EPFail: a new C++ session, on the CPU provider
        wrapped.append(names)
        session._sess = real
        return real.run(names, given, None)

    session._sess = Failing()
    runtime._session_run = fastpath.session_run(session)  # type: ignore[assignment]
    monkeypatch.setattr(session, "run", wrapper_run)
    np.testing.assert_array_equal(runtime.run(feeds)["variable"], want)
    assert len(wrapped) == 1
    np.testing.assert_array_equal(runtime.run(feeds)["variable"], want)
    assert len(wrapped) == 1  # the new C++ session's run, directly


def test_without_the_cpp_entry_the_public_run_is_used() -> None:
    class Session:  # an ONNX Runtime whose wrapper keeps its C++ session elsewhere
        def run(self, names: list[str], feeds: dict[str, Any]) -> list[Any]:
            return []

    assert fastpath.session_run(Session()) is None


# --- row_parser -------------------------------------------------------------------------------


FAST = Schema(FIELDS, max_rows=4)
with fastpath.switched(row_parser=False):
    PLAIN_SCHEMA = Schema(FIELDS, max_rows=4)


def test_the_row_parser_is_switched_off_in_the_plain_schema() -> None:
    assert FAST.parse_records != FAST._parse_records
    assert PLAIN_SCHEMA.parse_records == PLAIN_SCHEMA._parse_records


@settings(max_examples=500, deadline=None)
@given(record=EDGE_RECORDS, wrapped=st.booleans())
def test_the_row_parser_takes_and_refuses_exactly_what_the_general_parser_does(
    record: dict[str, Any], wrapped: bool
) -> None:
    fast, plain = FAST, PLAIN_SCHEMA
    body = {"records": [record]} if wrapped else record
    assert _outcome(fast.parse_records, body) == _outcome(plain.parse_records, body)


# --- all of them, end to end ------------------------------------------------------------------


def _metrics(model: str, version: str) -> dict[str, float]:
    flush_metrics()
    out = {}
    for metric in REGISTRY.collect():
        if metric.name.startswith("edgeml_inference"):
            for sample in metric.samples:
                ours = sample.labels.get("model") == model and sample.labels.get("version") == version
                # latencies differ from run to run: their count only
                if ours and not sample.name.endswith(("_sum", "_created", "_bucket")):
                    out[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return out


def _requests() -> list[tuple[str, bytes, str | None]]:
    """(route, body, Inference-Header-Content-Length): good and bad, one row and many."""
    row = {"temperature": 61.5, "vibration": 1.25, "machine": "m2"}
    bad = {"temperature": 900.0, "vibration": None, "machine": "m2"}
    v2 = {
        "inputs": [
            {"name": "temperature", "shape": [2, 1], "datatype": "FP32", "data": [61.5, 80.0]},
            {"name": "vibration", "shape": [2, 1], "datatype": "FP32", "data": [1.25, None]},
            {"name": "machine", "shape": [2, 1], "datatype": "BYTES", "data": ["m1", "m3"]},
        ]
    }
    one = {"inputs": [{**t, "shape": [1, 1], "data": t["data"][:1]} for t in v2["inputs"]]}
    head = {
        "inputs": [
            {
                "name": t["name"],
                "shape": [1, 1],
                "datatype": t["datatype"],
                "parameters": {"binary_data_size": 0},
            }
            for t in one["inputs"]
        ],
        "parameters": {"binary_data_output": True},
    }
    raws = [
        tensor_bytes(
            np.array(t["data"], dtype=object if t["datatype"] == "BYTES" else np.float32), t["datatype"]
        )
        for t in one["inputs"]
    ]
    for tensor, raw in zip(head["inputs"], raws, strict=True):
        tensor["parameters"]["binary_data_size"] = len(raw)
    header = orjson.dumps(head)
    return [
        ("predict", orjson.dumps(row), None),
        ("predict", orjson.dumps({"records": [row, bad | {"temperature": 70.0}]}), None),
        ("predict", orjson.dumps(bad), None),
        ("predict", orjson.dumps({"temperature": 61.5}), None),
        ("predict", b"{not json", None),
        ("v2", orjson.dumps(one), None),
        ("v2", orjson.dumps(v2), None),
        ("v2", header + b"".join(raws), str(len(header))),
        ("v2", orjson.dumps({"inputs": [{**one["inputs"][0], "datatype": "BYTES"}]}), None),
    ]


def _without_id(status: int, body: bytes, header_length: str | None) -> tuple[Any, ...]:
    """An answer with its prediction id taken out: ids are unique per request by design."""
    split = int(header_length) if header_length is not None else len(body)
    head, tail = body[:split], body[split:]
    if status != 200:
        return status, head, tail
    decoded = orjson.loads(head)
    assert decoded.pop("id")
    return status, decoded, tail


def test_every_trick_on_answers_and_counts_as_every_trick_off(tmp_path: Path) -> None:
    manifest = faults_classifier(tmp_path, version=41)
    outcomes = []
    for switches in (PLAIN, {}):
        with fastpath.switched(**switches):
            model = LoadedModel(tmp_path, manifest)
            model.warm_up(rounds=2)
            holder = ModelHolder()
            holder.swap(model)
            service = Serving(holder)
        before = _metrics("faults", "41")
        answers = []
        for _ in range(3):  # the row parser's recycled buffers are used again
            for route, body, length in _requests():
                if route == "predict":
                    answer = service.predict(body)
                else:
                    answer = service.infer("faults", None, body, header_length=length)
                answers.append(_without_id(answer.status, answer.body, answer.header_length))
        after = _metrics("faults", "41")
        counted = {k: v - before.get(k, 0.0) for k, v in after.items()}
        outcomes.append((answers, counted))
    (plain_answers, plain_counts), (fast_answers, fast_counts) = outcomes
    assert [a[0] for a in fast_answers].count(200) >= 12
    assert fast_answers == plain_answers
    assert fast_counts == plain_counts
