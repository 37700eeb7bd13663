"""Row-feature expressions: a small, safe language over columns.

A row feature is ``name = expr`` where ``expr`` uses numbers, column names, the
operators ``+ - * / ** %`` and these functions::

    log(x) log1p(x) exp(x) sqrt(x) abs(x) clip(x, lo, hi) minimum(a, b) maximum(a, b)
    hour(ts) day_of_week(ts) month(ts) is_weekend(ts) bucketize(x, [e1, e2, ...])

The language is closed on purpose: every construct maps to an ONNX operator, so the
training stage can put row features inside the exported model graph and devices
receive raw sensor values. Parsing never evaluates anything (``ast``, no ``eval``).
"""

from __future__ import annotations

import ast
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeml.errors import ExpressionError

__all__ = [
    "FUNCTIONS",
    "TIME_FUNCTIONS",
    "Expression",
    "ExpressionError",
    "bucket_edges",
    "parse_expression",
]

#: function name -> number of arguments
FUNCTIONS: Mapping[str, int] = {
    "log": 1,
    "log1p": 1,
    "exp": 1,
    "sqrt": 1,
    "abs": 1,
    "clip": 3,
    "minimum": 2,
    "maximum": 2,
    "hour": 1,
    "day_of_week": 1,
    "month": 1,
    "is_weekend": 1,
    "bucketize": 2,
}
#: functions whose argument must be a timestamp column
TIME_FUNCTIONS = frozenset({"hour", "day_of_week", "month", "is_weekend"})
_BINOPS: Mapping[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
    ast.Mod: np.mod,
}

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression."""

    source: str
    tree: ast.expr
    columns: frozenset[str]
    time_columns: frozenset[str]

    def evaluate(self, frame: Mapping[str, Array]) -> Array:
        """Evaluate over columns given as numpy arrays (timestamps as ``datetime64``)."""
        return np.asarray(_eval(self.tree, frame), dtype=np.float64)


def parse_expression(source: str) -> Expression:
    """Parse ``source``; raise :class:`ExpressionError` naming the offending part."""
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse {source!r}: {exc.msg}") from None
    except (RecursionError, MemoryError):  # CPython's parser signals deep nesting with these
        raise ExpressionError(_TOO_DEEP) from None
    columns: set[str] = set()
    time_columns: set[str] = set()
    try:
        _check(tree, columns, time_columns)
    except RecursionError:
        raise ExpressionError(_TOO_DEEP) from None
    return Expression(source, tree, frozenset(columns), frozenset(time_columns))


_TOO_DEEP = "expression is nested too deeply; split it into several row features"


def _number(node: ast.expr) -> float | None:
    """The value of a numeric literal, optionally signed (``-2.5``); None if it is not one."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
        return None
    if not isinstance(node.value, int | float):
        return None
    return sign * _finite(node.value)


def _finite(value: float) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        text = repr(value)
        raise ExpressionError(f"number {text if len(text) <= 24 else text[:20] + '...'} is too large")
    return number


def _check(node: ast.expr, columns: set[str], time_columns: set[str]) -> None:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numbers are allowed as constants, not {node.value!r}")
        _finite(node.value)
    elif isinstance(node, ast.Name):
        columns.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINOPS:
            raise ExpressionError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, columns, time_columns)
        _check(node.right, columns, time_columns)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        _check(node.operand, columns, time_columns)
    elif isinstance(node, ast.Call):
        _check_call(node, columns, time_columns)
    else:
        raise ExpressionError(
            f"{ast.unparse(node)!r} is not allowed: use numbers, column names, + - * / ** % "
            f"and the functions {', '.join(sorted(FUNCTIONS))}"
        )


def _check_call(node: ast.Call, columns: set[str], time_columns: set[str]) -> None:
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in FUNCTIONS:
        raise ExpressionError(f"unknown function {name!r}; known: {', '.join(sorted(FUNCTIONS))}")
    if node.keywords or len(node.args) != FUNCTIONS[name]:
        raise ExpressionError(f"{name}() takes {FUNCTIONS[name]} positional argument(s)")
    if name in TIME_FUNCTIONS:
        arg = node.args[0]
        if not isinstance(arg, ast.Name):
            raise ExpressionError(f"{name}() takes a timestamp column name")
        time_columns.add(arg.id)
        columns.add(arg.id)
        return
    if name == "bucketize":
        values = bucket_edges(node.args[1])
        if not values:
            raise ExpressionError("bucketize(x, [e1, e2, ...]) needs a list of numeric edges")
        if any(b <= a for a, b in itertools.pairwise(values)):
            raise ExpressionError("bucketize edges must be strictly increasing")
        _check(node.args[0], columns, time_columns)
        return
    for arg in node.args:
        _check(arg, columns, time_columns)


def bucket_edges(node: ast.expr) -> list[float] | None:
    """The numeric edges of a bucketize list literal, or None if it is not one."""
    if not isinstance(node, ast.List):
        return None
    values: list[float] = []
    for item in node.elts:
        value = _number(item)
        if value is None:
            return None
        values.append(value)
    return values


def _eval(node: ast.expr, frame: Mapping[str, Array]) -> Any:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)
        return float(node.value)
    if isinstance(node, ast.Name):
        return frame[node.id]
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, frame), _eval(node.right, frame))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, frame)
        return -value if isinstance(node.op, ast.USub) else value
    assert isinstance(node, ast.Call)
    assert isinstance(node.func, ast.Name)
    name, args = node.func.id, node.args
    if name in TIME_FUNCTIONS:
        ts = np.asarray(frame[args[0].id]).astype("datetime64[s]")  # type: ignore[attr-defined]
        days = ts.astype("datetime64[D]")
        dow = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        if name == "hour":
            return (ts - days).astype(np.int64) // 3600
        if name == "day_of_week":
            return dow
        if name == "is_weekend":
            return (dow >= 5).astype(np.float64)
        return days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    if name == "bucketize":
        x = np.asarray(_eval(args[0], frame), dtype=np.float64)
        buckets = np.searchsorted(np.asarray(bucket_edges(args[1])), x, side="right").astype(np.float64)
        return np.where(np.isnan(x), np.nan, buckets)  # a missing reading has no bucket
    values = [_eval(arg, frame) for arg in args]
    unary: Mapping[str, Callable[[Any], Any]] = {
        "log": np.log,
        "log1p": np.log1p,
        "exp": np.exp,
        "sqrt": np.sqrt,
        "abs": np.abs,
    }
    if name in unary:
        return unary[name](values[0])
    if name == "clip":
        return np.clip(values[0], values[1], values[2])
    return np.minimum(*values) if name == "minimum" else np.maximum(*values)
