"""Bundles split a model into graph and weights; the split model loads and answers as the whole one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeml.bundle.build import WEIGHTS_FILE, _split_weights


def reshaping_model(path: Path) -> None:
    """x · w, reshaped by a constant shape: what skl2onnx writes for a logistic regression's output."""
    weights = numpy_helper.from_array(np.arange(1, 5, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 2], dtype=np.int64), "shape_tensor")
    multiply = helper.make_node("Mul", ["x", "w"], ["y"])
    nodes = [multiply, helper.make_node("Reshape", ["y", "shape_tensor"], ["z"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [weights, shape],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def answer(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {"x": np.ones((1, 4), np.float32)})[0]
    return result


def test_weights_move_out_and_shapes_stay_in_the_graph(tmp_path: Path) -> None:
    reshaping_model(tmp_path / "whole.onnx")
    split = tmp_path / "bundle"
    split.mkdir()
    files = _split_weights(tmp_path / "whole.onnx", split)
    assert [f.path for f in files] == ["model.onnx", WEIGHTS_FILE]
    assert (split / WEIGHTS_FILE).read_bytes() == np.arange(1, 5, dtype=np.float32).tobytes()
    graph = onnx.load(str(split / "model.onnx"), load_external_data=False).graph
    located = {t.name: t.data_location for t in graph.initializer}
    assert located == {"w": TensorProto.EXTERNAL, "shape_tensor": TensorProto.DEFAULT}
    np.testing.assert_array_equal(answer(split / "model.onnx"), answer(tmp_path / "whole.onnx"))
