"""The agent's fast path: the few things it does beyond public APIs, each behind a switch.

The plain path uses public APIs only and is always correct: ONNX Runtime's
``InferenceSession.run`` and the schema's general parser. Each trick here stands in for one
plain step on the single-row path, gives the same answers and metrics
(``tests/agent/test_fastpath.py``), and falls back to the plain step where it does not fit
(another library version). Each is kept only while ``bench/agent_serving.py`` measures it
worth at least 5% of the in-process single-row predict path (its fast-path table: the path
with every trick, and with each one alone switched off, in one run):

- ``session_run``: ONNX Runtime's C++ ``run`` (``InferenceSession._sess.run``) without the
  public wrapper's Python checks, which a validated schema's feeds always pass; a failing
  execution provider goes through the wrapper, whose CPU fallback makes a new C++ session.
- ``row_parser``: a one-record parser generated (``exec``) per schema: straight-line checks
  per field, values packed into feed buffers recycled across requests.

Measured worth less and removed (issue #28): output dicts built by ``eval``, ``tuple.__new__``
for answers and batches, bulk writes into prometheus_client's private histogram buckets, and a
process-wide ``gc.freeze()`` after warm-up.

Switches are read when an object is built (a runtime, a schema), so objects built inside
:func:`switched` keep their setting: the bench and the tests run both paths side by side in
one process.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "RowField",
    "Switches",
    "release_row",
    "row_parser",
    "session_run",
    "switched",
]


@dataclass(frozen=True)
class Switches:
    """Which tricks are on (all by default)."""

    session_run: bool = True
    row_parser: bool = True

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class _Current:
    """The switches objects built now read."""

    switches = Switches()


@contextmanager
def switched(**on: bool) -> Iterator[Switches]:
    """Objects built inside this block get these switches (``switched(row_parser=False)``)."""
    before = _Current.switches
    _Current.switches = replace(before, **on)
    try:
        yield _Current.switches
    finally:
        _Current.switches = before


# --- session_run -------------------------------------------------------------------------------


def session_run(session: Any) -> Callable[[list[str], dict[str, np.ndarray]], list[Any]] | None:
    """``session.run(names, feeds)`` through ONNX Runtime's C++ entry; None when off or not there.

    ``InferenceSession.run`` checks every input is fed and that no OrtValue belongs to another
    session, then calls the C++ ``run``; feeds built from a schema hold every input as a numpy
    array, so those checks cannot fail (the C++ side checks inputs again anyway).
    """
    if not _Current.switches.session_run:
        return None
    try:
        import onnxruntime as ort

        ep_fail: type[Exception] = ort.capi.onnxruntime_pybind11_state.EPFail
        cpp = session._sess.run
    except AttributeError:
        return None
    state = [cpp]

    def run(names: list[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        try:
            results: list[Any] = state[0](names, feeds, None)
        except ep_fail:
            # the provider failed: the wrapper falls back to the CPU provider, making a new
            # C++ session, which is the one to call from now on
            results = session.run(names, feeds)
            state[0] = session._sess.run
        return results

    return run


# --- row_parser ----------------------------------------------------------------------------------


class RowField(NamedTuple):
    """One input as the row parser checks it: the values the general path takes plainly."""

    name: str
    kind: str  # "float64", "float32" or "string"
    low: float  # numbers: lowest and highest value taken, both inclusive
    high: float
    values: frozenset[str] | None  # strings: the categories allowed, or None for any


class _RowFeeds(dict[str, np.ndarray]):
    """The feeds of one row, in buffers a parser reuses (see :func:`release_row`)."""

    __slots__ = ("buffers", "leased", "pool")

    buffers: tuple[np.ndarray, ...]  # the float64 block, the float32 block, one array per string input
    leased: bool
    pool: list[_RowFeeds]


#: one-row feed buffers kept per parser for reuse (about the number of requests run at once)
_POOL_SIZE = 16


def release_row(feeds: Mapping[str, np.ndarray]) -> None:
    """Recycle one-row feed buffers of the row parser once the model has run on them (else nothing)."""
    if type(feeds) is _RowFeeds and feeds.leased:
        feeds.leased = False
        if len(feeds.pool) < _POOL_SIZE:
            feeds.pool.append(feeds)


def row_parser(
    row_fields: Sequence[RowField],
    general: Callable[[Any], Any],
    batch: Callable[[int, Any, dict[str, np.ndarray]], Any],
    columns: Callable[[dict[str, int], tuple[Any, ...]], Any],
    *,
    records_key: bool,
) -> Callable[[Any], Any] | None:
    """A parser of one plainly valid record, generated once per schema; None when off.

    It takes a body of one record (bare, or alone in ``records`` when ``records_key``) holding
    a plainly valid value for every input (a number within bounds, an allowed string) and
    nothing else, and returns ``batch(1, columns(positions by name, values in field order),
    feeds)``; any other body goes to ``general``, which takes it or names what is wrong. Field
    names enter the code only as string literals (``repr``), bounds and categories as globals.
    """
    if not _Current.switches.row_parser or not row_fields:
        return None
    doubles = [f for f in row_fields if f.kind == "float64"]
    singles = [f for f in row_fields if f.kind == "float32"]
    strings = [f for f in row_fields if f.kind == "string"]
    var = {f.name: f"v{i}" for i, f in enumerate(row_fields)}
    pool: list[_RowFeeds] = []

    def fresh() -> _RowFeeds:
        block64 = np.zeros((len(doubles), 1, 1), dtype=np.float64)
        block32 = np.zeros((len(singles), 1, 1), dtype=np.float32)
        texts = [np.full((1, 1), "", dtype=object) for _ in strings]
        feeds = _RowFeeds(
            [(f.name, block64[i]) for i, f in enumerate(doubles)]
            + [(f.name, block32[i]) for i, f in enumerate(singles)]
            + [(f.name, texts[i]) for i, f in enumerate(strings)]
        )
        feeds.buffers = (block64, block32, *texts)
        feeds.leased = False
        feeds.pool = pool
        return feeds

    env: dict[str, Any] = {
        "_dict": dict,
        "_list": list,
        "_float": float,
        "_int": int,
        "_str": str,
        "_general": general,
        "_batch": batch,
        "_columns": columns,
        "_names": {f.name: i for i, f in enumerate(row_fields)},
        "_pool": pool,
        "_fresh": fresh,
        "_pack64": struct.Struct(f"={len(doubles)}d").pack_into,
        "_pack32": struct.Struct(f"={len(singles)}f").pack_into,
    }
    code = [
        "def parse_records(body):",
        "    if type(body) is not _dict:",
        "        return _general(body)",
        "    record = body",
    ]
    if records_key:
        code += [
            "    if 'records' in body:",
            "        rows = body['records']",
            "        if len(body) != 1 or type(rows) is not _list or len(rows) != 1:",
            "            return _general(body)",
            "        record = rows[0]",
            "        if type(record) is not _dict:",
            "            return _general(body)",
        ]
    # every input present (see the KeyError below) and nothing else: as many keys as inputs
    code += [f"    if len(record) != {len(row_fields)}:", "        return _general(body)"]
    code.append("    try:")
    for i, field in enumerate(row_fields):
        v = var[field.name]
        code.append(f"        {v} = record[{field.name!r}]")
        if field.kind != "string":
            env[f"_low{i}"], env[f"_high{i}"] = field.low, field.high
            code += [
                f"        if type({v}) is not _float:",
                f"            if type({v}) is not _int:",
                "                return _general(body)",
                f"            {v} = _float({v})",
                f"        if not _low{i} <= {v} <= _high{i}:",
                "            return _general(body)",
            ]
        elif field.values is not None:
            env[f"_values{i}"] = field.values
            code += [
                f"        if type({v}) is not _str or {v} not in _values{i}:",
                "            return _general(body)",
            ]
        else:
            code += [f"        if type({v}) is not _str:", "            return _general(body)"]
    code += [
        "    except (KeyError, OverflowError):  # an input left out, an integer too large for a float",
        "        return _general(body)",
        "    feeds = _pool.pop() if _pool else _fresh()",
        "    feeds.leased = True",
        "    buffers = feeds.buffers",
    ]
    if doubles:
        code.append(f"    _pack64(buffers[0], 0, {', '.join(var[f.name] for f in doubles)})")
    if singles:
        code.append(f"    _pack32(buffers[1], 0, {', '.join(var[f.name] for f in singles)})")
    for k, field in enumerate(strings):
        code.append(f"    buffers[{k + 2}][0, 0] = {var[field.name]}")
    values = ", ".join(var[f.name] for f in row_fields)
    code.append(f"    return _batch(1, _columns(_names, ({values},)), feeds)")
    exec("\n".join(code), env)  # noqa: S102 - our own code; names are repr() literals
    parse: Callable[[Any], Any] = env["parse_records"]
    return parse
