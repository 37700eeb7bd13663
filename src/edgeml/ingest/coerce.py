"""Schema enforcement: coerce a batch to the spec's types; quarantine what cannot be.

Every row ends up in exactly one of two tables: ``clean`` (typed per the schema, in
schema column order) or ``quarantine`` (the raw row as JSON plus the reason). Nothing
is dropped silently: :class:`Coerced` carries the counts, and the reasons grouped by
problem (``temperature: not a float``) for reports.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from edgeml.errors import UserError
from edgeml.spec.models import Column, Schema

__all__ = ["QUARANTINE_SCHEMA", "Coerced", "arrow_schema", "coerce_batch"]

_ARROW_TYPES: Mapping[str, pa.DataType] = {
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "category": pa.string(),
    "text": pa.string(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
}
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}

QUARANTINE_SCHEMA = pa.schema([("source", pa.string()), ("reason", pa.string()), ("row", pa.string())])


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of clean data for a spec schema."""
    return pa.schema([pa.field(name, _ARROW_TYPES[col.type]) for name, col in schema.columns.items()])


@dataclass
class Coerced:
    """The outcome of coercing one batch."""

    clean: pa.Table
    quarantine: pa.Table
    problems: Counter[str] = field(default_factory=Counter)
    ignored_columns: tuple[str, ...] = ()


def _blank_to_null(raw: pd.Series) -> pd.Series:
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):
        stripped = raw.astype("string").str.strip()
        return stripped.mask(stripped == "")
    return raw


def _coerce_column(raw: pd.Series, col: Column) -> tuple[pd.Series, np.ndarray, str]:
    """(coerced values, failure mask, problem description) for one column."""
    values = _blank_to_null(raw)
    present = values.notna().to_numpy()
    if col.type in ("float", "int"):
        if pd.api.types.is_bool_dtype(values):
            values = values.astype("float64")
        out = pd.to_numeric(values, errors="coerce").astype("float64")
        fail = present & out.isna().to_numpy()
        problem = f"not a{'n integer' if col.type == 'int' else ' number'}"
        if col.type == "int":
            # Fractional, infinite or beyond int64: not an integer (casting those would raise).
            number = out.to_numpy()
            with np.errstate(invalid="ignore"):
                whole = (
                    np.isfinite(number)
                    & (number == np.floor(number))
                    & (number >= -(2.0**63))
                    & (number < 2.0**63)
                )
            not_int = out.notna().to_numpy() & ~whole
            fail |= not_int
            out = out.mask(not_int).astype("Int64")
        return out, fail, problem
    if col.type == "bool":
        if pd.api.types.is_bool_dtype(values):
            return values.astype("boolean"), np.zeros(len(values), bool), ""
        text = values.astype("string").str.lower()
        out = pd.Series(pd.NA, index=values.index, dtype="boolean")
        out[text.isin(_TRUE).fillna(False).to_numpy()] = True
        out[text.isin(_FALSE).fillna(False).to_numpy()] = False
        return out, present & out.isna().to_numpy(), "not true/false"
    if col.type == "timestamp":
        if pd.api.types.is_datetime64_any_dtype(values):
            out = pd.to_datetime(values, utc=True)
        elif pd.api.types.is_numeric_dtype(values):
            # Epoch numbers: seconds, or milliseconds as JavaScript and many sensors send them
            # (1e11 s is the year 5138; 1e11 ms is 1973).
            unit = "ms" if float(np.nanmax(np.abs(values.to_numpy(dtype=float)), initial=0)) >= 1e11 else "s"
            out = pd.to_datetime(values, unit=unit, utc=True, errors="coerce")
        else:
            out = pd.to_datetime(values.astype("string"), utc=True, errors="coerce", format="ISO8601")
        return out, present & out.isna().to_numpy(), "not an ISO 8601 timestamp"
    out = values.astype("string")
    if col.type == "category" and col.values is not None:
        allowed = out.isin(col.values).fillna(False).to_numpy()
        return out, present & ~allowed, f"not one of {', '.join(col.values)}"
    return out, np.zeros(len(values), bool), ""


def _to_arrow(values: pd.Series, arrow_type: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(arrow_type):
        # Naive UTC first: handing pyarrow a tz-aware Series goes through a deprecated pandas path.
        naive = values.dt.tz_convert(None).to_numpy(dtype="datetime64[ms]")
        return pa.array(naive, type=pa.timestamp("ms"), from_pandas=True).cast(arrow_type)
    return pa.array(values, type=arrow_type, from_pandas=True)


def _raw_json(frame: pd.DataFrame) -> list[str]:
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [json.dumps(r, default=str, ensure_ascii=False) for r in records]


def _all_clean(table: pa.Table, schema: Schema) -> pa.Table | None:
    """The batch typed per the schema if every cell converts cleanly, in Arrow; else None.

    The common case (a healthy source) costs one vectorised cast per column. Any doubt —
    a cell Arrow cannot cast, a value outside a category or the column's min/max, a missing
    required value — sends
    the whole batch down the pandas path, which finds and explains each bad row.
    """
    target = arrow_schema(schema)
    columns = []
    for target_field in target:
        col = schema.columns[target_field.name]
        if target_field.name not in table.column_names:
            if not col.nullable:
                return None
            columns.append(pa.nulls(table.num_rows, target_field.type))
            continue
        raw = table[target_field.name]
        if pa.types.is_floating(raw.type) and target_field.type == pa.int64():
            return None  # fractional values need a per-row look
        if pa.types.is_timestamp(target_field.type) and (
            pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type)
        ):
            return None  # epoch numbers: seconds or milliseconds, decided on the pandas path
        try:
            values = raw if raw.type == target_field.type else pc.cast(raw, target_field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        if pa.types.is_floating(target_field.type) and pc.any(pc.is_inf(values)).as_py():
            return None
        if _out_of_range(values, col):
            return None
        if not col.nullable and values.null_count:
            return None
        if col.type == "category" and col.values is not None:
            allowed = pc.is_in(values, value_set=pa.array(col.values))
            if not pc.all(pc.or_kleene(allowed, pc.is_null(values))).as_py():
                return None
        columns.append(values)
    return pa.Table.from_arrays(columns, schema=target)


def _out_of_range(values: pa.ChunkedArray | pa.Array, col: Column) -> bool:
    if col.min is not None and pc.any(pc.less(values, col.min)).as_py():
        return True
    return col.max is not None and bool(pc.any(pc.greater(values, col.max)).as_py())


def _range_problem(col: Column) -> str:
    low = "-∞" if col.min is None else f"{col.min:g}"
    high = "∞" if col.max is None else f"{col.max:g}"
    return f"outside [{low}, {high}]"


def _outside(values: pd.Series, col: Column) -> np.ndarray:
    """Mask of present values below the column's ``min`` or above its ``max``."""
    number = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    mask = np.zeros(len(number), dtype=bool)
    with np.errstate(invalid="ignore"):
        if col.min is not None:
            mask |= number < col.min
        if col.max is not None:
            mask |= number > col.max
    return mask


def coerce_batch(batch: pa.Table | pd.DataFrame, schema: Schema, *, source: str) -> Coerced:
    """Coerce ``batch`` to ``schema``.

    A required (non-nullable) column absent from the batch is a user error naming the
    source and the columns it does have; a nullable one is filled with nulls. Columns
    not in the schema are ignored and reported in ``ignored_columns``.
    """
    if isinstance(batch, pa.Table):
        clean = _all_clean(batch, schema)
        if clean is not None:
            ignored = tuple(c for c in batch.column_names if c not in schema.columns)
            return Coerced(clean, QUARANTINE_SCHEMA.empty_table(), Counter(), ignored)
    frame = batch.to_pandas() if isinstance(batch, pa.Table) else batch
    missing = [n for n, c in schema.columns.items() if n not in frame.columns and not c.nullable]
    if missing:
        raise UserError(
            f"source {source!r} has no column {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(map(str, frame.columns)) or 'no columns'})",
            hint="fix the source or mark the column nullable in the spec's schema",
        )
    ignored = tuple(str(c) for c in frame.columns if c not in schema.columns)
    n = len(frame)
    reasons = np.full(n, "", dtype=object)
    problems: Counter[str] = Counter()
    out: dict[str, Any] = {}
    for name, col in schema.columns.items():
        raw = frame[name] if name in frame.columns else pd.Series([None] * n, index=frame.index)
        values, fail, problem = _coerce_column(raw, col)
        if not col.nullable:
            null = values.isna().to_numpy() & ~fail
            if null.any():
                problems[f"{name}: missing (column is required)"] += int(null.sum())
                reasons[null] = reasons[null] + f"{name}: missing; "
        if col.min is not None or col.max is not None:
            outside = _outside(values, col) & ~fail
            if outside.any():
                ranged = _range_problem(col)
                problems[f"{name}: {ranged}"] += int(outside.sum())
                shown = raw[outside].astype(str).str.slice(0, 60).to_numpy()
                reasons[outside] = (
                    reasons[outside] + np.char.add(f"{name}: {ranged} (", shown.astype(str)) + "); "
                )
        if fail.any():
            problems[f"{name}: {problem}"] += int(fail.sum())
            shown = raw[fail].astype(str).str.slice(0, 60).to_numpy()
            reasons[fail] = reasons[fail] + np.char.add(f"{name}: {problem} (", shown.astype(str)) + "); "
        out[name] = values
    bad = reasons != ""
    keep = ~bad
    target = arrow_schema(schema)
    clean = pa.table([_to_arrow(out[f.name][keep], f.type) for f in target], schema=target)
    quarantine = pa.table(
        {
            "source": [source] * int(bad.sum()),
            "reason": [r.rstrip("; ") for r in reasons[bad]],
            "row": _raw_json(frame[bad]),
        },
        schema=QUARANTINE_SCHEMA,
    )
    return Coerced(clean, quarantine, problems, ignored)
