"""Expectation checks: one small function per kind, registered by name.

Each check looks at the whole dataset (a pandas frame) and returns an
:class:`Outcome`: pass or fail, how many rows fail, a few examples, and — for
row-level checks — which rows, so they can be quarantined. Adding a kind is one
decorated function here plus its model in ``edgeml.spec.models``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from edgeml.spec.models import Expectation, Schema

__all__ = ["CHECKS", "PART_COLUMN", "Outcome", "evaluate", "expectation_name"]


@dataclass
class Outcome:
    """The result of one expectation on one dataset."""

    name: str
    kind: str
    column: str | None
    severity: str
    passed: bool
    failing: int = 0
    detail: str = ""
    examples: list[Any] = field(default_factory=list)
    rows: np.ndarray | None = None  # boolean mask of failing rows (row-level checks only)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "column": self.column,
            "severity": self.severity,
            "passed": self.passed,
            "failing": self.failing,
            "detail": self.detail,
            "examples": [str(e) for e in self.examples],
        }


Check = Callable[[pd.DataFrame, Any, Schema, datetime], tuple[np.ndarray | None, bool, str, list[Any]]]
CHECKS: dict[str, Check] = {}


def check(kind: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[kind] = fn
        return fn

    return register


def _column(exp: Any) -> str | None:
    if getattr(exp, "columns", None):
        return ",".join(exp.columns)
    return getattr(exp, "column", None)


def expectation_name(exp: Any) -> str:
    if exp.name:
        return str(exp.name)
    column = _column(exp)
    return f"{exp.kind}({column})" if column else str(exp.kind)


def _examples(values: pd.Series, mask: np.ndarray, n: int = 5) -> list[Any]:
    return list(values[mask].head(n).tolist())


@check("row_count")
def _row_count(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    n = len(df)
    ok = (exp.min is None or n >= exp.min) and (exp.max is None or n <= exp.max)
    bounds = f"{exp.min if exp.min is not None else 0}..{exp.max if exp.max is not None else '∞'}"
    return None, ok, f"{n:,} rows, expected {bounds}", []


@check("not_null")
def _not_null(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    mask = df[exp.column].isna().to_numpy()
    return mask, not mask.any(), f"{int(mask.sum()):,} missing", []


@check("unique")
def _unique(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    mask = df.duplicated(subset=list(exp.columns), keep="first").to_numpy()
    examples = df.loc[mask, list(exp.columns)].head(5).to_dict(orient="records")
    return mask, not mask.any(), f"{int(mask.sum()):,} duplicate rows", examples


@check("between")
def _between(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    values = pd.to_numeric(df[exp.column], errors="coerce")
    low = values < exp.min if exp.min is not None else pd.Series(False, index=df.index)
    high = values > exp.max if exp.max is not None else pd.Series(False, index=df.index)
    mask = (low | high).fillna(False).to_numpy(dtype=bool)
    return (
        mask,
        not mask.any(),
        f"{int(mask.sum()):,} outside [{exp.min}, {exp.max}]",
        _examples(values, mask),
    )


@check("in_set")
def _in_set(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    values = df[exp.column]
    allowed = {str(v) for v in exp.values} | set(exp.values)
    mask = (values.notna() & ~values.isin(allowed)).to_numpy(dtype=bool)
    return mask, not mask.any(), f"{int(mask.sum()):,} not in the set", _examples(values, mask)


@check("regex")
def _regex(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    values = df[exp.column].astype("string")
    full = re.compile(exp.pattern)
    matched = values.map(
        lambda v: bool(full.fullmatch(v)) if isinstance(v, str) else True, na_action="ignore"
    )
    mask = (values.notna() & ~matched.fillna(True).astype(bool)).to_numpy(dtype=bool)
    return mask, not mask.any(), f"{int(mask.sum()):,} do not match {exp.pattern!r}", _examples(values, mask)


def _ts_column(exp: Any, schema: Schema) -> str:
    name = exp.column or schema.timestamp
    assert name is not None  # the spec checks guarantee it
    return str(name)


#: optional column naming the lake part a row came from: arrival order is known within a part only
PART_COLUMN = "__edgeml_part"


@check("monotonic_timestamp")
def _monotonic(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    ts = df[_ts_column(exp, schema)]
    keys = [df[c] for c in (PART_COLUMN, schema.entity) if c is not None and c in df.columns]
    prev = ts.groupby(keys).shift(1) if keys else ts.shift(1)
    back = (ts <= prev) if exp.strict else (ts < prev)
    mask = back.fillna(False).to_numpy(dtype=bool)
    word = "not after" if exp.strict else "before"
    return mask, not mask.any(), f"{int(mask.sum()):,} rows {word} the previous reading", _examples(ts, mask)


@check("freshness")
def _freshness(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    newest = df[_ts_column(exp, schema)].max()
    if pd.isna(newest):
        return None, False, "no timestamps at all", []
    age = now - newest.to_pydatetime()
    return None, age <= exp.max_age, f"newest row is {age} old (allowed {exp.max_age})", [str(newest)]


@check("max_missing_fraction")
def _max_missing(df: pd.DataFrame, exp: Any, schema: Schema, now: datetime) -> Any:
    fraction = float(df[exp.column].isna().mean()) if len(df) else 0.0
    return None, fraction <= exp.max, f"{fraction:.2%} missing (allowed {exp.max:.2%})", []


_TIMESTAMP_KINDS = frozenset({"monotonic_timestamp", "freshness"})


def evaluate(
    df: pd.DataFrame, expectations: list[Expectation], schema: Schema, now: datetime | None = None
) -> list[Outcome]:
    """Run every expectation; never stops early, so the report is complete."""
    now = now or datetime.now(UTC)
    outcomes = []
    for exp in expectations:
        mask, passed, detail, examples = CHECKS[exp.kind](df, exp, schema, now)
        failing = int(mask.sum()) if mask is not None else 0
        # a timestamp check names the column it checked, even when it defaults to schema.timestamp
        column = _ts_column(exp, schema) if exp.kind in _TIMESTAMP_KINDS else _column(exp)
        outcomes.append(
            Outcome(
                expectation_name(exp),
                exp.kind,
                column,
                exp.severity,
                bool(passed),
                failing,
                detail,
                examples,
                mask,
            )
        )
    return outcomes
