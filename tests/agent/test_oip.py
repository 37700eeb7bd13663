"""The OIP v2 answers are what protobuf and JSON readers read (REST tensor heads written once, kept)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from edgeml.agent import oip
from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb

OUTPUTS = [
    [("label", np.array(["ok"], dtype=object)), ("probabilities", np.full((1, 4), 0.25, np.float32))],
    # shapes past one varint byte, labels of the general BYTES path, float64
    [
        ("label", np.array(["é", "ok"] * 150, dtype=object)),
        ("score", np.linspace(0, 1, 300 * 200).reshape(300, 200)),
    ],
    [("scalar", np.ones((), np.float32)), ("empty", np.ones((0, 3))), ("flags", np.array([True, False]))],
]


def _generated(
    model: str, version: str, request_id: str | None, outputs: list[tuple[str, np.ndarray]]
) -> bytes:
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for name, array in outputs:
        kind = oip.datatype(array)
        response.outputs.add(name=name, datatype=kind, shape=array.shape)
        response.raw_output_contents.append(oip.tensor_bytes(array, kind))
    payload: bytes = response.SerializeToString()
    return payload


@pytest.mark.parametrize("outputs", OUTPUTS)
@pytest.mark.parametrize("request_id", [None, "", "a1", "é" * 100])
def test_grpc_answer_is_the_generated_message_s_bytes(
    outputs: list[tuple[str, np.ndarray]], request_id: str | None
) -> None:
    for _ in range(2):  # the same bytes the second time
        written = oip.grpc_answer("pump-faults", "3", request_id, outputs)
        assert written == _generated("pump-faults", "3", request_id, outputs)
    read = pb.ModelInferResponse.FromString(written)
    assert [list(o.shape) for o in read.outputs] == [list(a.shape) for _, a in outputs]


def _read_rest(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return orjson.loads(body), b""
    return orjson.loads(body[:header_length]), body[header_length:]


@pytest.mark.parametrize("outputs", OUTPUTS)
@pytest.mark.parametrize(
    "binary", [(False, {}), (True, {}), (False, {"label": True}), (True, {"label": False})]
)
def test_rest_answer_reads_back(
    outputs: list[tuple[str, np.ndarray]], binary: tuple[bool, dict[str, bool]]
) -> None:
    head = b'{"model_name":"pump-faults","model_version":"3","id":"a1"'
    for _ in range(2):  # the same bytes the second time
        body, header_length = oip.rest_answer(head, outputs, binary)
        answer, section = _read_rest(body, header_length)
        assert {k: answer[k] for k in ("model_name", "model_version", "id")} == {
            "model_name": "pump-faults",
            "model_version": "3",
            "id": "a1",
        }
        at = 0
        for tensor, (name, array) in zip(answer["outputs"], outputs, strict=True):
            kind = oip.datatype(array)
            assert (tensor["name"], tensor["datatype"], tensor["shape"]) == (name, kind, list(array.shape))
            if binary[1].get(name, binary[0]):
                size = tensor["parameters"]["binary_data_size"]
                got = oip.from_bytes(name, kind, section[at : at + size])
                at += size
                assert list(np.asarray(got, dtype=array.dtype)) == list(array.ravel())
            else:
                assert tensor["data"] == array.ravel().tolist() or np.allclose(tensor["data"], array.ravel())
        assert at == len(section)


@pytest.mark.parametrize("kind", sorted(oip.DTYPES))
@pytest.mark.parametrize("count", [0, 1, 16, 17, 300])
def test_from_bytes_small_and_large(kind: str, count: int) -> None:
    values = np.arange(count).astype(oip.DTYPES[kind])
    got = oip.from_bytes("x", kind, values.tobytes())
    assert isinstance(got, list if count <= 16 else np.ndarray)
    assert list(np.asarray(got, dtype=values.dtype)) == list(values)


def test_from_bytes_refuses_a_ragged_section() -> None:
    with pytest.raises(oip.InputError, match="not a whole number of FP64 values"):
        oip.from_bytes("x", "FP64", b"\0" * 12)


STRINGS = [
    ["M-3"] * 300,  # one length: read in bulk
    [f"M-{i % 9}" for i in range(300)],
    ["ab", "abc"] * 100,  # lengths differ: element by element
    ["é"] * 50,
    ["x\0"] * 40,  # a trailing NUL, which numpy's fixed-width bytes would drop
    [""] * 40,
    ["a"] * 5,
    ["M-3"],  # one element (a row's category): read without the element by element loop
    ["é" * 40],
    [""],
    ["x\0"],
]


@pytest.mark.parametrize("values", STRINGS)
def test_bytes_tensors_round_trip(values: list[str]) -> None:
    raw = oip.tensor_bytes(np.array(values, dtype=object), "BYTES")
    assert raw == b"".join(oip._LENGTH.pack(len(v.encode())) + v.encode() for v in values)
    assert oip.from_bytes("machine", "BYTES", raw) == values


def test_bytes_tensor_elements_keep_their_types() -> None:
    mixed = np.array([True, 1, "1", b"b"] * 10, dtype=object)  # True == 1: not one element
    assert oip.from_bytes("x", "BYTES", oip.tensor_bytes(mixed, "BYTES")) == ["True", "1", "1", "b"] * 10


@pytest.mark.parametrize("count", [1, 3, 40])
def test_bytes_that_are_not_utf8_are_named(count: int) -> None:
    raw = b"".join(oip._LENGTH.pack(2) + b"\xff\xfe" for _ in range(count))
    with pytest.raises(oip.InputError, match="element 0 is not UTF-8 text"):
        oip.from_bytes("machine", "BYTES", raw)


def _binary_request(tensors: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A REST request whose every input comes as binary tensor data: (body, header length)."""
    inputs = [
        {"name": f"x{i}", "datatype": kind, "shape": [1], "parameters": {"binary_data_size": len(raw)}}
        for i, (kind, raw) in enumerate(tensors)
    ]
    header = orjson.dumps({"inputs": inputs})
    return header + b"".join(raw for _, raw in tensors), str(len(header))


BINARY_TENSORS = [
    *[
        (kind, np.arange(count).astype(dtype).tobytes())
        for kind, dtype in oip.DTYPES.items()
        for count in (0, 1, 2)
    ],
    ("BYTES", oip.tensor_bytes(np.array(["M-3"], dtype=object), "BYTES")),  # one element: read in place
    ("BYTES", oip.tensor_bytes(np.array(["é" * 40], dtype=object), "BYTES")),
    ("BYTES", oip.tensor_bytes(np.array([""], dtype=object), "BYTES")),
    ("BYTES", oip.tensor_bytes(np.array(["x\0"], dtype=object), "BYTES")),
    ("BYTES", oip.tensor_bytes(np.array(["a", "bc"], dtype=object), "BYTES")),
    ("BYTES", b""),
]


def test_decode_rest_reads_each_tensor_as_from_bytes_does() -> None:
    """One-value tensors are read in place, in one pass: the same data as ``from_bytes`` reads."""
    body, length = _binary_request(BINARY_TENSORS)
    request = oip.decode_rest(body, length)
    for tensor, (kind, raw) in zip(request["inputs"], BINARY_TENSORS, strict=True):
        want = oip.from_bytes(tensor["name"], kind, raw)
        got = tensor["data"]
        assert type(got) is type(want), kind
        assert [type(v) for v in got] == [type(v) for v in want], kind
        assert list(got) == list(want), kind


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (oip._LENGTH.pack(2) + b"\xff\xfe", "element 0 is not UTF-8 text"),
        (oip._LENGTH.pack(9) + b"ab", "runs past the end of its data"),
        (b"\x01\x00", "ends inside an element's 4-byte length"),
    ],
)
def test_decode_rest_names_a_bad_one_element_bytes_tensor(raw: bytes, message: str) -> None:
    body, length = _binary_request([("BYTES", raw)])
    with pytest.raises(oip.InputError, match=message) as caught:
        oip.decode_rest(body, length)
    assert caught.value.field == "x0"


LABELS = ["ok", "bearing", "cavitation", "é%s"]


@pytest.mark.parametrize(
    "binary", [(False, {}), (True, {}), (False, {"label": True}), (True, {"label": False})]
)
@pytest.mark.parametrize(
    "outputs",
    [
        {"label": np.array([label], dtype=object), "probabilities": np.full((1, 4), p, dtype)}
        for label in LABELS
        for dtype in (np.float32, np.float64)
        for p in (0.25, 1 / 3)
    ]
    + [
        {"label": np.array(["ok"]), "probabilities": np.asfortranarray(np.full((1, 4), 0.1, np.float32))},
        {"label": np.array(["other"], dtype=object), "probabilities": np.full((1, 4), 0.25, np.float32)},
        {"label": np.array([3]), "probabilities": np.full((1, 4), 0.25, np.float32)},
        {"label": np.array(["ok", "ok"], dtype=object), "probabilities": np.full((2, 4), 0.25, np.float32)},
        {"label": np.array([["ok"]], dtype=object), "probabilities": np.full((1, 4), 0.25, np.float32)},
        {"label": np.array(["ok"], dtype=object), "probabilities": np.full((1, 3), 0.25, np.float32)},
        {"label": np.array(["ok"], dtype=object), "probabilities": np.full((1, 4), 0.25, np.float16)},
        {"label": np.array(["ok"], dtype=object)},
    ],
)
def test_classifier_answers_are_rest_answer_s_bytes(
    outputs: dict[str, np.ndarray], binary: tuple[bool, dict[str, bool]]
) -> None:
    """A classifier's one-row answers from kept JSON: the bytes rest_answer writes, or None (its way)."""
    head = b'{"model_name":"pump-faults","model_version":"3","id":'
    answers = oip.ClassifierAnswers(head, LABELS)
    for _ in range(2):
        written = answers("a-1", outputs, binary)
        general = oip.rest_answer(head + b'"a-1"', outputs.items(), binary)
        label = outputs["label"]
        plain = (
            not binary[1]
            and len(outputs) == 2
            and label.shape == (1,)
            and label.item(0) in LABELS
            and outputs["probabilities"].shape == (1, 4)
            and outputs["probabilities"].dtype in (np.dtype(np.float32), np.dtype(np.float64))
        )
        assert written == (general if plain else None)
