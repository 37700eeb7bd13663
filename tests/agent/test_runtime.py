"""Running a bundle's model: the session's C++ run, and the way back to ONNX Runtime's wrapper."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from bundle.conftest import make_manifest, write_model
from edgeml.agent.inputs import Schema
from edgeml.agent.runtime import ModelRuntime


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    write_model(folder, seed=3)
    return folder


@pytest.fixture
def runtime(folder: Path) -> ModelRuntime:
    return ModelRuntime(folder, make_manifest(sorted(folder.iterdir())))


def _public(folder: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The output of the same model through ONNX Runtime's public ``InferenceSession.run``."""
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["variable"], feeds)[0])


def test_run_answers_as_the_public_session_run(runtime: ModelRuntime, folder: Path) -> None:
    assert runtime._run is not None  # the session's C++ run is in use
    schema = Schema(runtime.inputs)
    one = schema.parse_records({"a": 1.5, "b": -2.0})  # the fast path's recycled buffers
    many = schema.parse_records([{"a": 1.0, "b": 2.0}] * 3)
    for batch in (one, many):
        outputs = runtime.run(batch.feeds)
        assert list(outputs) == ["variable"]
        assert isinstance(outputs["variable"], np.ndarray)
        np.testing.assert_array_equal(outputs["variable"], _public(folder, dict(batch.feeds)))
    feeds = {"a": np.ones((2, 1)), "b": np.zeros((2, 1))}  # any mapping is taken, not only dicts
    np.testing.assert_array_equal(runtime.run(MappingProxyType(feeds))["variable"], _public(folder, feeds))


def test_a_failing_provider_falls_back_through_the_wrapper(
    runtime: ModelRuntime, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = {"a": np.ones((1, 1)), "b": np.ones((1, 1))}

    def failing(*_: Any) -> Any:
        raise runtime._ep_fail("the provider failed")

    monkeypatch.setattr(runtime, "_run", failing)
    np.testing.assert_array_equal(runtime.run(feeds)["variable"], _public(folder, feeds))
    assert runtime._run is not None
    assert runtime._run is not failing  # the session's own C++ run again, from now on


def test_without_the_cpp_entry_the_public_run_is_used(
    runtime: ModelRuntime, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds = {"a": np.full((1, 1), 2.0), "b": np.ones((1, 1))}
    monkeypatch.setattr(runtime, "_run", None)  # as with an ONNX Runtime lacking InferenceSession._sess
    np.testing.assert_array_equal(runtime.run(feeds)["variable"], _public(folder, feeds))


@pytest.mark.parametrize("count", [0, 1, 2, 16, 17])
def test_outputs_are_named_whatever_their_names(count: int) -> None:
    from edgeml.agent.runtime import _namer

    names = [f"out'{i}\"\\\n{{r[0]}}" for i in range(count)]  # quotes, a backslash, code-like text
    results = [object() for _ in names]
    for convert in (False, True):
        named = _namer(names, convert=convert)(results)
        assert list(named) == names
        if not convert:
            assert all(named[n] is r for n, r in zip(names, results, strict=True))
