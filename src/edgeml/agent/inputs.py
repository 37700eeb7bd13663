"""Requests checked against a bundle's input schema, before any of them reaches the model.

Two request shapes, one result (:class:`Batch`: validated columns and the tensors to feed):

- **JSON records** (``POST /predict``): ``{"records": [{"a": 1.0, ...}, ...]}``, a bare list
  of records, or one record as an object (one row). ``records`` is the batch key unless the
  model has an input of that name. A record may leave out a nullable input (missing);
  ``null`` is missing too.
- **Open Inference Protocol v2** inference request: ``{"inputs": [{"name", "shape",
  "datatype", "data"}], "outputs"?: [{"name"}], "id"?, "parameters"?}`` with one tensor per
  model input, shape ``[N, 1]`` or ``[N]``, ``data`` flat (row-major) or nested as rows, or a
  flat numpy array where the tensor came as binary data (:mod:`edgeml.agent.oip` decodes REST's
  binary extension and gRPC into this one form).
  Numeric inputs take FP16/FP32/FP64 and the INT/UINT types, string inputs take BYTES, time
  inputs take either. A nullable input's tensor may be left out.

Every value is checked: type, missing where not nullable, finite, within ``min``/``max``,
a category the manifest allows. Time inputs take epoch seconds or ISO-8601 strings (no zone
means UTC, as in training). Anything wrong raises :class:`InputError` naming the field.
Numpy only: the agent's Starlette server and Ray Serve share this module.

One record (the common request on a device) may take the fast path's parser
(:func:`edgeml.agent.fastpath.row_parser`): it accepts only rows that are plainly valid
(numbers within bounds, allowed strings, every input present) and writes them into feed
buffers reused across requests (:meth:`Schema.release`); anything else, valid or not, goes
through the general path, which decides and names the error, so both take and refuse
exactly the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from edgeml.agent.fastpath import RowField, release_row, row_parser
from edgeml.bundle.manifest import InputField
from edgeml.errors import InputError

__all__ = ["Batch", "InputError", "RowColumns", "Schema"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_V2_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_TENSOR_KEYS = frozenset({"name", "shape", "datatype", "data", "parameters"})
_ONE_ROW = ([1, 1], [1])  # the shapes of a one-row tensor
#: columns of up to this many values are checked value by value: numpy's per-call cost outweighs the loop
_SMALL = 16
_PLAIN_NUMBERS = frozenset({float, int})


class RowColumns(Mapping[str, tuple[Any]]):
    """The columns of one row taken by the fast path: each input's value as a one-item tuple.

    It keeps the row's values as one tuple in the schema's order (``row``), and ``names``
    (input name -> position, shared by the schema's rows): one small object per request
    instead of a dict and a tuple per input, which telemetry transposes in bulk.
    """

    __slots__ = ("names", "row")

    def __init__(self, names: dict[str, int], row: tuple[Any, ...]) -> None:
        self.names = names
        self.row = row

    def __getitem__(self, name: str) -> tuple[Any]:
        return (self.row[self.names[name]],)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


class Batch(NamedTuple):
    """Validated rows.

    ``columns`` holds each input's raw values, one per row: what observers and telemetry see.
    Each is a 1-D array (float64 with NaN for missing, or objects with None for missing), except
    for a single row taken by the fast path, whose columns are :class:`RowColumns` (a one-item
    tuple of the value per input: a float, or a str). ``feeds`` holds the [N, 1] tensors in the
    element type the graph declares, ready for the runtime; once the model has run on them,
    :meth:`Schema.release` may recycle them.
    """

    rows: int
    columns: Mapping[str, np.ndarray | tuple[Any, ...]]
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
        #: rows from a decoded ``/predict`` body (see the module docstring for its shapes)
        self.parse_records: Callable[[Any], Batch] = self._parse_records
        if max_rows >= 1:  # one record through the fast path's parser, when it is on
            fast = row_parser(
                [_row_field(f) for f in self.fields],
                self._parse_records,
                Batch,
                RowColumns,
                records_key=self._records_key,
            )
            self.parse_records = fast or self._parse_records

    # --- JSON records ---------------------------------------------------------------

    @staticmethod
    def release(batch: Batch) -> None:
        """Recycle the feed buffers of a batch the model has run on; its feeds must not be read after.

        Only one-row batches of the fast path's parser have such buffers; for others this does
        nothing, as it does when called again for the same batch.
        """
        release_row(batch.feeds)

    def _parse_records(self, body: Any) -> Batch:
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
        row = self._v2_row(body)
        if row is not None:
            batch = self.parse_records(row)
            request_id, outputs = body.get("id"), body.get("outputs")
            if request_id is None and outputs is None:
                return batch
            try:
                return batch._replace(request_id=request_id, outputs=self._requested_outputs(outputs))
            except InputError:
                self.release(batch)
                raise
        return self._parse_v2(body)

    def _parse_v2(self, body: Any) -> Batch:
        """:meth:`parse_v2` without its one-row shortcut: every request, and the errors' wording."""
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
        given: dict[str, list[Any] | np.ndarray] = {}
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

    def _v2_row(self, body: Any) -> dict[str, Any] | None:
        """A one-row request as the record it carries, for the records fast path; else None.

        Only a request whose every tensor header is plainly valid (a model input, once each,
        every input present, a datatype it takes, shape [1, 1] or [1], one value) and whose id
        is a string or absent; its values are then checked as a record's are, with the same
        messages. Anything else goes the general way, which names what is wrong.
        """
        if type(body) is not dict or not body.keys() <= _V2_KEYS:
            return None
        tensors = body.get("inputs")
        if type(tensors) is not list or len(tensors) != len(self.fields):
            return None
        request_id = body.get("id")
        if request_id is not None and type(request_id) is not str:
            return None
        record: dict[str, Any] = {}
        by_name = self._by_name
        for tensor in tensors:
            # name, datatype, shape and data, and beside them at most "parameters"
            if type(tensor) is not dict or (
                len(tensor) != 4 and (len(tensor) != 5 or "parameters" not in tensor)
            ):
                return None
            try:
                name, kind, shape, data = tensor["name"], tensor["datatype"], tensor["shape"], tensor["data"]
            except KeyError:
                return None
            if type(name) is not str or type(kind) is not str:
                return None
            field = by_name.get(name)
            if field is None or name in record or kind not in field.datatypes:
                return None
            # [1.0, 1.0] and [True] equal [1, 1] and [1]; the general path refuses them
            if shape not in _ONE_ROW or type(shape[0]) is not int or type(shape[-1]) is not int:
                return None
            if type(data) is list and len(data) == 1 and type(data[0]) is not list:
                record[name] = data[0]
            elif type(data) is np.ndarray and data.size == 1:
                record[name] = data.item(0)  # a Python float, int or bool
            else:
                return None
        return record

    def _tensor(self, i: int, tensor: Any) -> tuple[str, list[Any] | np.ndarray, int]:
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
        if not isinstance(datatype, str) or datatype not in field.datatypes:
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
        if isinstance(data, np.ndarray):  # binary tensor data (see edgeml.agent.oip), flat
            pass
        elif not isinstance(data, list):
            raise InputError(name, "data must be a list")
        elif data and type(data[0]) is list:  # nested as rows: [[x0], [x1], ...]
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
        self, rows: int, values: Mapping[str, list[Any] | np.ndarray]
    ) -> tuple[dict[str, np.ndarray | tuple[Any, ...]], dict[str, np.ndarray]]:
        """Columns and feeds from each input's values (every input present, ``rows`` values each)."""
        columns: dict[str, np.ndarray | tuple[Any, ...]] = {}
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


def _bounds(field: _Field) -> tuple[float, float]:
    """(lowest, highest) value the general path takes for ``field``, both inclusive.

    It takes ``-limit < x < limit`` (finite, fits the tensor type) and ``min <= x <= max``;
    for a float ``x``, ``-limit < x`` is ``x >= nextafter(-limit, inf)``. NaN fails both
    comparisons, as it should: missing values go the general way.
    """
    low = math.nextafter(-field.limit, math.inf)
    high = math.nextafter(field.limit, -math.inf)
    if field.low is not None:
        low = max(low, field.low)
    if field.high is not None:
        high = min(high, field.high)
    return low, high


def _row_field(field: _Field) -> RowField:
    if not field.numeric:
        return RowField(field.name, "string", 0.0, 0.0, field.values)
    kind = "float32" if field.dtype is np.float32 else "float64"
    return RowField(field.name, kind, *_bounds(field), None)


def _numbers(field: _Field, values: list[Any] | np.ndarray) -> list[float] | np.ndarray:
    """Values as floats (NaN for missing); raises on anything the input does not take."""
    if isinstance(values, np.ndarray):
        return _number_array(field, values)
    if len(values) > _SMALL:
        bulk = _number_list(field, values)
        if bulk is not None:
            return bulk
    return _each_number(field, values)


def _each_number(field: _Field, values: list[Any]) -> list[float]:
    """``_numbers`` value by value: the plain path, which names the first bad row."""
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


def _number_list(field: _Field, values: list[Any]) -> np.ndarray | None:
    """``_numbers`` of a JSON list in bulk when every value is a plain number, else None.

    Only ``float`` and ``int`` values (not ``bool``, a subclass of ``int``; not strings, which
    numpy would parse) go to numpy at once; None for anything else, and for any value the
    checks of :func:`_number_array` do not take, so that ``_numbers`` names the first bad row.
    """
    if not set(map(type, values)) <= _PLAIN_NUMBERS:
        return None
    try:
        numbers = np.array(values, dtype=np.float64)
    except OverflowError:  # an integer too large for a float
        return None
    return numbers if _plainly_valid(field, numbers) else None


def _plainly_valid(field: _Field, numbers: np.ndarray) -> bool:
    """Every value finite, within the tensor type's range and the input's ``min``/``max``."""
    valid = np.abs(numbers) < field.limit  # False for NaN
    if field.low is not None:
        valid &= numbers >= field.low
    if field.high is not None:
        valid &= numbers <= field.high
    return bool(valid.all())


def _number_array(field: _Field, values: np.ndarray) -> list[float] | np.ndarray:
    """``_numbers`` of a numeric array (binary tensor data), checked in bulk.

    An array that is not plainly valid (a value out of range, not finite, or NaN, which is
    missing) goes through ``_numbers`` value by value, which names the first bad row or takes
    the missing values of a nullable input.
    """
    if values.size <= _SMALL:
        return _each_number(field, values.tolist())
    numbers = values.astype(np.float64)
    if _plainly_valid(field, numbers):
        return numbers
    return _each_number(field, numbers.tolist())


def _strings(field: _Field, values: list[Any] | np.ndarray) -> bool:
    """Check string values; True when some are missing."""
    if len(values) > _SMALL and _plain_strings(field, values):
        return False
    return _each_string(field, values)


def _each_string(field: _Field, values: list[Any] | np.ndarray) -> bool:
    """``_strings`` value by value: the plain path, which names the first bad row."""
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


def _plain_strings(field: _Field, values: list[Any] | np.ndarray) -> bool:
    """True when every value is a string the input takes, checked once per distinct value.

    (A column of categories repeats a few values.) False for anything else, which the
    value by value check then names: a value missing, not a string, not a category.
    """
    try:
        distinct = set(values)
    except TypeError:  # unhashable values (lists, objects): not strings
        return False
    if not all(type(value) is str for value in distinct):
        return False
    return field.values is None or distinct <= field.values


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
