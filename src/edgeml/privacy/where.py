"""The where-clause of an erasure, ``<column> = <value>``: parsed strictly, matched in the column's type.

Shared by ``edgeml data erase`` (:mod:`edgeml.privacy.erase`), the copies kept outside the stages
(:mod:`edgeml.privacy.kept`) and the central node's ``POST /v1/erase``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from edgeml.errors import UserError

__all__ = ["Where", "matches", "parse_where"]

_CLAUSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Where:
    """``column = value``; ``value`` a string when quoted or not a number."""

    column: str
    value: str | int | float

    @property
    def value_sha256(self) -> str:
        return hashlib.sha256(str(self.value).encode()).hexdigest()


def parse_where(text: str) -> Where:
    """``<column> = <value>``, or a UserError saying what form is expected."""
    hint = 'the form is --where "<column> = <value>", e.g. --where "email = \'ana@example.org\'"'
    match = _CLAUSE.match(text)
    if not match or not match.group(2):
        raise UserError(f"cannot read --where {text!r}", hint=hint)
    column, raw = match.group(1), match.group(2)
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        inner = raw[1:-1]
        if raw[0] in inner:
            raise UserError(f"cannot read --where {text!r}: the value holds its own quote", hint=hint)
        return Where(column, inner)
    if _NUMBER.match(raw):
        return Where(column, float(raw) if any(c in raw for c in ".eE") else int(raw))
    if re.search(r"\s|['\"=<>!]|\b(and|or)\b", raw, re.IGNORECASE):
        raise UserError(
            f"cannot read --where {text!r}: one column and one value only (quote text with spaces)",
            hint=hint,
        )
    return Where(column, raw)


def matches(where: Where, column: pa.ChunkedArray) -> pa.Array:
    """Rows whose ``column`` equals the value, compared in the column's type (missing: no match)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        target: Any = pa.scalar(str(where.value))
        values = column.cast(pa.string()) if pa.types.is_dictionary(kind) else column
    elif pa.types.is_timestamp(kind):
        try:
            target = pa.scalar(str(where.value)).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise UserError(f"--where {where.column}: {where.value!r} is not a time") from None
        values = column
    else:
        if isinstance(where.value, str):
            raise UserError(f"--where {where.column} is a {kind} column; {where.value!r} is not a number")
        target, values = pa.scalar(where.value), column
    return pc.fill_null(pc.equal(values, target), False).combine_chunks()
