"""Requests checked against a bundle's input schema, before any of them reaches the model.

Two request shapes, one result (:class:`Batch`: validated columns and the tensors to feed):

- **JSON records** (``POST /predict``): ``{"records": [{"a": 1.0, ...}, ...]}``, a bare list
  of records, or one record as an object (one row). ``records`` is the batch key unless the
  model has an input of that name. A record may leave out a nullable input (missing);
  ``null`` is missing too.
- **Open Inference Protocol v2** inference request: ``{"inputs": [{"name", "shape",
  "datatype", "data"}], "outputs"?: [{"name"}], "id"?, "parameters"?}`` with one tensor per
  model input, shape ``[N, 1]`` or ``[N]``, ``data`` flat (row-major) or nested as rows.
  Numeric inputs take FP16/FP32/FP64 and the INT/UINT types, string inputs take BYTES, time
  inputs take either. A nullable input's tensor may be left out.

Every value is checked: type, missing where not nullable, finite, within ``min``/``max``,
a category the manifest allows. Time inputs take epoch seconds or ISO-8601 strings (no zone
means UTC, as in training). Anything wrong raises :class:`InputError` naming the field.
Numpy only: the agent's Starlette server and Ray Serve share this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edgeml.bundle.manifest import InputField
from edgeml.errors import EdgemlError

__all__ = ["Batch", "InputError", "Schema"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_V2_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})


class InputError(EdgemlError):
    """A request the model cannot take: ``field`` names what is wrong, ``status`` is the HTTP answer."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Batch:
    """Validated rows.

    ``columns`` holds each input as a 1-D array of raw values (float64 with NaN for missing,
    or objects with None for missing): what observers and telemetry see. ``feeds`` holds the
    [N, 1] tensors in the element type the graph declares, ready for the runtime.
    """

    rows: int
    columns: dict[str, np.ndarray]
    feeds: dict[str, np.ndarray]
    request_id: str | None = None
    outputs: tuple[str, ...] | None = None  # v2: the outputs asked for (None: all)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    numeric: bool  # a float tensor (numeric or time); otherwise strings
    time: bool
    dtype: type[np.floating[Any]] | None
    nullable: bool
    low: float | None
    high: float | None
    limit: float  # the largest magnitude the tensor type holds
    values: frozenset[str] | None
    datatypes: frozenset[str]

    @classmethod
    def of(cls, spec: InputField) -> _Field:
        numeric = spec.dtype != "string"
        time = spec.kind == "time"
        datatypes = (
            (_NUMERIC_TYPES | {"BYTES"}) if time else _NUMERIC_TYPES if numeric else frozenset({"BYTES"})
        )
        return cls(
            name=spec.name,
            numeric=numeric,
            time=time,
            dtype=np.float32 if spec.dtype == "float32" else np.float64 if numeric else None,
            nullable=spec.nullable,
            low=spec.min,
            high=spec.max,
            limit=_FLOAT32_MAX if spec.dtype == "float32" else math.inf,
            values=frozenset(spec.values) if spec.values is not None and spec.kind == "categorical" else None,
            datatypes=datatypes,
        )


class Schema:
    """A manifest's inputs, compiled once per model; parses requests into :class:`Batch` es."""

    def __init__(self, inputs: Sequence[InputField], *, max_rows: int = 1024) -> None:
        self.fields = [_Field.of(f) for f in inputs]
        self.max_rows = max_rows
        self._numeric = [f for f in self.fields if f.numeric]
        self._strings = [f for f in self.fields if not f.numeric]
        self._by_name = {f.name: f for f in self.fields}
        self._names = frozenset(self._by_name)
        # "records" is the batch key unless the model itself has an input of that name
        self._records_key = "records" not in self._names

    # --- JSON records ---------------------------------------------------------------

    def parse_records(self, body: Any) -> Batch:
        """Rows from a decoded ``/predict`` body (see the module docstring for its shapes)."""
        if isinstance(body, dict) and self._records_key and "records" in body:
            extra = sorted(set(body) - {"records"})
            if extra:
                raise InputError(extra[0][:100], f"unknown key {extra[0][:100]!r} beside 'records'")
            records = body["records"]
            if not isinstance(records, list):
                raise InputError("records", "must be a list of JSON objects")
            where = "records"
        elif isinstance(body, dict):
            records, where = [body], "record"
        elif isinstance(body, list):
            records, where = body, "records"
        else:
            raise InputError("body", "expected a JSON object or a list of objects")
        self._check_rows(len(records), where)
        names = self._names
        for i, record in enumerate(records):
            if type(record) is not dict:
                raise InputError(f"{where}[{i}]", "each record must be a JSON object")
            if not record.keys() <= names:
                unknown = sorted(k for k in record if k not in names)[0][:100]
                raise InputError(unknown, f"unknown input {unknown!r} (the model takes {self._listing()})")
        if len(records) == 1:  # the common case, without a list per field
            record = records[0]
            columns, feeds = self._columns(1, {f.name: [record.get(f.name)] for f in self.fields})
        else:
            columns, feeds = self._columns(
                len(records), {f.name: [r.get(f.name) for r in records] for f in self.fields}
            )
        return Batch(len(records), columns, feeds)

    # --- Open Inference Protocol v2 -----------------------------------------------------

    def parse_v2(self, body: Any) -> Batch:
        """Rows from a decoded OIP v2 inference request."""
        if not isinstance(body, dict):
            raise InputError("body", "an inference request is a JSON object with 'inputs'")
        extra = sorted(k for k in body if k not in _V2_KEYS)
        if extra:
            raise InputError(extra[0][:100], f"unknown key {extra[0][:100]!r} in the inference request")
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InputError("id", "must be a string")
        tensors = body.get("inputs")
        if not isinstance(tensors, list) or not tensors:
            raise InputError("inputs", "must be a non-empty list of tensors")
        given: dict[str, list[Any]] = {}
        rows: int | None = None
        for i, tensor in enumerate(tensors):
            name, data, count = self._tensor(i, tensor)
            if name in given:
                raise InputError(name, "given twice")
            if rows is None:
                self._check_rows(count, name)
                rows = count
            elif count != rows:
                raise InputError(name, f"has {count} rows, but {tensors[0]['name']} has {rows}")
            given[name] = data
        assert rows is not None
        for field in self.fields:
            if field.name not in given:
                if not field.nullable:
                    raise InputError(field.name, "missing required input")
                given[field.name] = [None] * rows
        columns, feeds = self._columns(rows, given)
        return Batch(rows, columns, feeds, request_id, self._requested_outputs(body.get("outputs")))

    def _tensor(self, i: int, tensor: Any) -> tuple[str, list[Any], int]:
        """(input name, flat values, rows) of one request tensor, its header checked."""
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise InputError(where, "each input tensor must be a JSON object")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InputError(f"{where}.name", "must be a string")
        field = self._by_name.get(name)
        if field is None:
            name = name[:100]
            raise InputError(name, f"unknown input {name!r} (the model takes {self._listing()})")
        extra = sorted(k for k in tensor if k not in _TENSOR_KEYS)
        if extra:
            raise InputError(name, f"unknown key {extra[0]!r} in the tensor")
        datatype = tensor.get("datatype")
        if datatype not in field.datatypes:
            want = "BYTES" if not field.numeric else "FP64, FP32 or an INT type"
            raise InputError(name, f"datatype {datatype!r} does not fit this input (send {want})")
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(type(d) is int and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise InputError(name, f"shape {shape!r}: expected [N, 1] or [N]")
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InputError(name, "data must be a list")
        if data and type(data[0]) is list:  # nested as rows: [[x0], [x1], ...]
            if not all(type(row) is list and len(row) == 1 for row in data):
                raise InputError(name, "nested data must hold one value per row")
            data = [row[0] for row in data]
        if len(data) != shape[0]:
            raise InputError(name, f"shape {shape} says {shape[0]} values, data has {len(data)}")
        return name, data, shape[0]

    @staticmethod
    def _requested_outputs(outputs: Any) -> tuple[str, ...] | None:
        if outputs is None:
            return None
        if not isinstance(outputs, list):
            raise InputError("outputs", "must be a list of {'name': ...}")
        names = []
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise InputError(f"outputs[{i}]", "must be an object with a string 'name'")
            names.append(out["name"])
        return tuple(names)

    # --- values ---------------------------------------------------------------------------

    def _check_rows(self, rows: int, where: str) -> None:
        if rows == 0:
            raise InputError(where, "no rows: send at least one")
        if rows > self.max_rows:
            raise InputError(
                where, f"{rows} rows is more than this server takes per request ({self.max_rows})"
            )

    def _listing(self) -> str:
        return ", ".join(f.name for f in self.fields)

    def _columns(
        self, rows: int, values: dict[str, list[Any]]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Columns and feeds from each input's values (every input present, ``rows`` values each)."""
        columns: dict[str, np.ndarray] = {}
        feeds: dict[str, np.ndarray] = {}
        if self._numeric:
            # One array for every numeric input, whose rows are the columns: one allocation per
            # request instead of one per input, and float64 feeds are views, not copies.
            block = np.array([_numbers(f, values[f.name]) for f in self._numeric], dtype=np.float64)
            for field, column in zip(self._numeric, block, strict=True):
                columns[field.name] = column
                feed = column if field.dtype is np.float64 else column.astype(np.float32)
                feeds[field.name] = feed.reshape(rows, 1)
        for field in self._strings:
            given = values[field.name]
            missing = _strings(field, given)
            column = np.array(given, dtype=object)
            columns[field.name] = column
            if missing:  # the graph takes "" for a missing string, as the runtime feeds it
                column = np.array(["" if v is None else v for v in given], dtype=object)
            feeds[field.name] = column.reshape(rows, 1)
        return columns, feeds


def _numbers(field: _Field, values: list[Any]) -> list[float]:
    """Values as floats (NaN for missing); raises on anything the input does not take."""
    out: list[float] = []
    append = out.append
    low, high, limit = field.low, field.high, field.limit
    for i, value in enumerate(values):
        kind = type(value)
        if kind is float or kind is int:
            try:
                number = float(value)
            except OverflowError:
                raise InputError(field.name, f"row {i}: {value} is not a finite number") from None
        elif value is None:
            number = math.nan
        elif kind is str and field.time:
            number = _epoch_seconds(field.name, i, value)
        else:
            wanted = "epoch seconds or an ISO-8601 string" if field.time else "a number"
            raise InputError(field.name, f"row {i}: expected {wanted}, got {_kind(value)}")
        if not -limit < number < limit:
            if math.isnan(number):  # missing, as null is
                if not field.nullable:
                    raise InputError(
                        field.name, f"row {i}: missing (null or NaN), and this input is required"
                    )
            elif math.isinf(number):
                raise InputError(field.name, f"row {i}: {number} is not a finite number")
            else:
                raise InputError(field.name, f"row {i}: {number:g} does not fit a float32")
        elif low is not None and number < low:
            raise InputError(field.name, f"row {i}: {number:g} is below the minimum {low:g}")
        elif high is not None and number > high:
            raise InputError(field.name, f"row {i}: {number:g} is above the maximum {high:g}")
        append(number)
    return out


def _strings(field: _Field, values: list[Any]) -> bool:
    """Check string values; True when some are missing."""
    missing = False
    allowed = field.values
    for i, value in enumerate(values):
        if type(value) is str:
            if allowed is not None and value not in allowed:
                shown = ", ".join(sorted(allowed)[:10])
                raise InputError(
                    field.name, f"row {i}: {value[:80]!r} is not one of the categories ({shown})"
                )
        elif value is None:
            if not field.nullable:
                raise InputError(field.name, f"row {i}: missing (null), and this input is required")
            missing = True
        else:
            raise InputError(field.name, f"row {i}: expected a string, got {_kind(value)}")
    return missing


def _epoch_seconds(name: str, row: int, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(name, f"row {row}: {text[:80]!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _kind(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
