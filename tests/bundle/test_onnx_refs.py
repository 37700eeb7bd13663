"""The protobuf walker finds every external-data location and never crashes on junk."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeml.bundle.onnx_refs import OnnxFormatError, external_locations

from .conftest import write_model


def test_inline_model_has_no_external_data(tmp_path: Path) -> None:
    write_model(tmp_path, 0, external=False)
    assert external_locations((tmp_path / "model.onnx").read_bytes()) == []


def test_external_weights_are_found(tmp_path: Path) -> None:
    write_model(tmp_path, 0, external=True)
    assert external_locations((tmp_path / "model.onnx").read_bytes()) == ["model.onnx.data"]


def test_tensors_in_subgraphs_and_attributes_are_found(tmp_path: Path) -> None:
    """An If node's branch holding a Constant whose tensor lives outside: still found."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tensor = numpy_helper.from_array(np.zeros(400), "c")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../escape.bin"
    tensor.ClearField("raw_data")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=tensor)],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, [400])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [400])],
    )
    model = helper.make_model(graph)
    assert external_locations(model.SerializeToString()) == ["../escape.bin", "../escape.bin"]
    assert onnx.load_from_string(model.SerializeToString()).graph.node[0].op_type == "If"


@pytest.mark.parametrize("junk", [b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0b", b"\x3a\x05abc"])
def test_malformed_protobuf_is_a_format_error(junk: bytes) -> None:
    with pytest.raises(OnnxFormatError):
        external_locations(junk)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_either_parse_or_raise_format_error(data: bytes) -> None:
    with contextlib.suppress(OnnxFormatError):
        assert isinstance(external_locations(data), list)


@settings(max_examples=100)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=10_000))
def test_a_mutated_real_model_never_crashes_the_walker(
    tmp_path_factory: pytest.TempPathFactory, patch: bytes, at: int
) -> None:
    folder = tmp_path_factory.mktemp("m")
    data = bytearray((write_model(folder, 0, external=True)[0]).read_bytes())
    at %= len(data)
    data[at : at + len(patch)] = patch
    with contextlib.suppress(OnnxFormatError):
        external_locations(bytes(data))
