"""``edgeml drift run``: a backtest of drift on files, on the live path's own code.

The reference file gets the statistics ``bundle build`` signs
(:func:`~edgeml.drift.reference.build_reference`); the analysis file is cut into consecutive
chunks, each input of each chunk is counted by the agent's telemetry counter
(:func:`edgeml.agent.telemetry.count_values`) and judged by :func:`~edgeml.drift.judge.judge`,
as the central monitor judges a pooled window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from edgeml.agent.telemetry import count_values
from edgeml.bundle.manifest import DriftThresholds, InputField
from edgeml.drift.judge import Verdict, judge
from edgeml.drift.methods import DEFAULT_CATEGORICAL, DEFAULT_CONTINUOUS, Method
from edgeml.drift.reference import Kind, build_reference, chunk_bounds, column_kind
from edgeml.errors import UserError

__all__ = ["ChunkResult", "DriftRun", "drift_run", "read_table", "run_files"]

#: file suffixes read as Parquet; anything else is read as CSV
PARQUET = {".parquet", ".pq"}


def read_table(path: Path, what: str) -> pd.DataFrame:
    """A CSV or Parquet file as a frame; a clear error for a missing or unreadable file."""
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        if path.suffix.lower() in PARQUET:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # pandas and pyarrow raise many kinds: all mean "not a table"
        raise UserError(f"{what} file {path} is not a readable CSV or Parquet table: {exc}") from exc


class ChunkResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    index: int
    start: int = Field(description="first row of the chunk in the analysis file")
    stop: int = Field(description="one past its last row")
    features: list[Verdict]


class DriftRun(BaseModel):
    """Every chunk's verdicts, with the thresholds they were judged by."""

    model_config = ConfigDict(frozen=True)

    reference_rows: int
    analysis_rows: int
    kinds: dict[str, Kind]
    thresholds: DriftThresholds
    chunks: list[ChunkResult]


def _field(name: str, kind: Kind) -> InputField:
    if kind == "continuous":
        return InputField(name=name, kind="numeric", dtype="float64")
    return InputField(name=name, kind="categorical", dtype="string")


def _values(column: pd.Series, kind: Kind) -> list[Any] | np.ndarray:
    """A column as a device sees it: floats, or Python values with None for missing."""
    if kind == "continuous":
        return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
    return list(column.astype(object).where(column.notna(), None))


def _kinds(frame: pd.DataFrame, columns: Sequence[str], categorical: Sequence[str]) -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    for name in columns:
        kind = "categorical" if name in categorical else column_kind(frame[name])
        if kind is None:
            raise UserError(f"column {name!r} ({frame[name].dtype}) is neither a number nor a category")
        kinds[name] = kind
    return kinds


def drift_run(
    reference: pd.DataFrame,
    analysis: pd.DataFrame,
    chunk_size: int,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    continuous_method: Method = DEFAULT_CONTINUOUS,
    categorical_method: Method = DEFAULT_CATEGORICAL,
    methods: Mapping[str, Method] | None = None,
    min_js: float = 0.0,
) -> DriftRun:
    """Judge ``analysis`` in chunks of ``chunk_size`` rows against ``reference``.

    A column's method is ``methods[column]``, else the one for its kind."""
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be at least 1, not {chunk_size}")
    if reference.empty or analysis.empty:
        raise UserError("the reference and the analysis data need at least one row each")
    names = list(columns) if columns else [c for c in reference.columns if c in analysis.columns]
    for name in names:
        for frame, what in ((reference, "reference"), (analysis, "analysis")):
            if name not in frame.columns:
                raise UserError(
                    f"column {name!r} is not in the {what} data (columns: {', '.join(frame.columns)})"
                )
    if not names:
        raise UserError("the reference and the analysis data share no column")
    kinds = _kinds(reference, names, categorical)
    for name in categorical:
        if name not in names:
            raise UserError(f"--categorical {name!r} is not one of the columns judged")
    try:
        picked = {n: continuous_method if k == "continuous" else categorical_method for n, k in kinds.items()}
        picked |= dict(methods or {})
        histograms, thresholds = build_reference(reference[names], chunk_size, kinds=kinds, methods=picked)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    fields = {name: _field(name, kinds[name]) for name in names}
    values = {name: _values(analysis[name], kinds[name]) for name in names}
    chunks = []
    for index, (start, stop) in enumerate(chunk_bounds(len(analysis), chunk_size)):
        verdicts = []
        for name in names:
            if name not in thresholds.features:
                continue  # no reference value at all: nothing to compare with
            counted = count_values(fields[name], histograms[name], values[name][start:stop])
            verdicts.append(
                judge(
                    name,
                    thresholds.features[name],
                    histograms[name],
                    counted.counts,
                    chunk_size,
                    missing=counted.missing,
                    min_js=min_js,
                )
            )
        chunks.append(ChunkResult(index=index, start=start, stop=stop, features=verdicts))
    return DriftRun(
        reference_rows=len(reference),
        analysis_rows=len(analysis),
        kinds=kinds,
        thresholds=thresholds,
        chunks=chunks,
    )


def run_files(
    reference: Path,
    analysis: Path,
    chunk_size: int,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    continuous_method: Method = DEFAULT_CONTINUOUS,
    categorical_method: Method = DEFAULT_CATEGORICAL,
    min_js: float = 0.0,
) -> DriftRun:
    """:func:`drift_run` on two CSV or Parquet files."""
    return drift_run(
        read_table(reference, "reference"),
        read_table(analysis, "analysis"),
        chunk_size,
        columns=columns,
        categorical=categorical,
        continuous_method=continuous_method,
        categorical_method=categorical_method,
        min_js=min_js,
    )
