"""The external-data files an ONNX model points at, read without the ``onnx`` package.

A tensor stored outside the model names its file in ``external_data["location"]``; the
runtime opens that path relative to the model. A tampered or careless model could name
``../../etc/shadow`` or ``/dev/zero``. Devices do not install ``onnx``, so this walks the
protobuf wire format directly, visiting every place a tensor can sit: initializers, sparse
initializers, node attributes (and their subgraphs), functions and training graphs.
"""

from __future__ import annotations

from collections.abc import Iterator

from edgeml.errors import OnnxFormatError

__all__ = ["OnnxFormatError", "external_locations"]

# protobuf field numbers, from onnx.proto
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 13, 14
_MAX_DEPTH = 64


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise OnnxFormatError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of one message; length-delimited values as views."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise OnnxFormatError("a field runs past the end of its message")
            yield number, wire, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire}")
    if pos != len(buf):
        raise OnnxFormatError("a fixed-width field runs past the end of its message")


def _tensor_location(buf: memoryview) -> str | None:
    external = False
    location = None
    for number, _, value in _fields(buf):
        if number == _TENSOR_DATA_LOCATION and value == 1:
            external = True
        elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
            entry = {
                n: bytes(v).decode("utf-8", "replace")
                for n, _, v in _fields(value)
                if isinstance(v, memoryview)
            }
            if entry.get(1) == "location":
                location = entry.get(2, "")
    if location is not None or external:
        return location if location is not None else ""
    return None


_SCHEMAS = {
    "model": _MODEL,
    "training": _TRAINING,
    "function": _FUNCTION,
    "graph": _GRAPH,
    "node": _NODE,
    "attribute": _ATTRIBUTE,
    "sparse": _SPARSE,
}


def _walk(buf: memoryview, kind: str, depth: int, out: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise OnnxFormatError("graphs nest deeper than any real model")
    if kind == "tensor":
        location = _tensor_location(buf)
        if location is not None:
            out.append(location)
        return
    schema = _SCHEMAS[kind]
    for number, wire, value in _fields(buf):
        child = schema.get(number)
        if child is not None and wire == 2 and isinstance(value, memoryview):
            _walk(value, child, depth + 1, out)


def external_locations(model: bytes) -> list[str]:
    """Every external-data location the model names ("" when a tensor is external but names none)."""
    out: list[str] = []
    _walk(memoryview(model), "model", 0, out)
    return out
