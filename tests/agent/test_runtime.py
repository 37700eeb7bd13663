"""Running a bundle's model: the same outputs as ONNX Runtime's own session (see test_fastpath too)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

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
