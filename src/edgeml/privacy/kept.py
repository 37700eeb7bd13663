"""Copies of a dataset's rows kept outside its stages, which an erasure must reach too.

- Validation reports (``catalog/<dataset>/validation/*.json``) keep a few failing values per
  expectation as examples: those of the erased column equal to the value are taken out.
- Each MLflow run of the dataset's experiment keeps up to 2,000 holdout rows
  (``edgeml/holdout.parquet``, the model's inputs and target) so that export can prove parity.
  A row goes when its erased column equals the value (the column is a model input) or when it
  equals, in every model input, a row the erasure took out of the feature tables (the column is
  not an input: the run's own ``spec.json`` says how training turned feature rows into inputs).
  The artifact is rewritten in place (MLflow has no delete of one artifact) and the run gets an
  ``edgeml.erased.<time>`` tag: column, the value's sha256, rows, reason — never the value.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeml.errors import UserError

if TYPE_CHECKING:
    from edgeml.privacy.where import Where
    from edgeml.store.base import ObjectStore

__all__ = ["HOLDOUT", "Experiment", "erase_holdouts", "find_experiment", "scrub_reports"]

HOLDOUT = "edgeml/holdout.parquet"


def _example_holds(example: str, where: Where, record: bool) -> bool:
    """Whether a report's example (``str`` of a value, or of a record of several columns) holds the value."""
    if record:  # str(dict): {'operator': 'badge-ana', 'ts': ...}
        if isinstance(where.value, str):
            return f"{where.column!r}: {where.value!r}" in example
        found = re.search(re.escape(repr(where.column)) + r": ([^,}]+)", example)
        text = found.group(1) if found else ""
    else:
        if isinstance(where.value, str):
            return example == where.value
        text = example
    try:
        return float(text) == float(where.value)
    except ValueError:
        return False


def scrub_reports(store: ObjectStore, dataset: str, where: Where) -> int:
    """Take the examples holding ``where``'s value out of the dataset's validation reports; how many.

    Failing counts stay as validation found them (they are counts, not values)."""
    removed = 0
    for key in store.keys(f"catalog/{dataset}/validation/"):
        if not key.endswith(".json"):
            continue
        doc = json.loads(store.get(key))
        changed = 0
        for outcome in doc.get("outcomes", []):
            columns = (outcome.get("column") or "").split(",")
            if where.column not in columns:
                continue
            examples = outcome.get("examples", [])
            kept = [e for e in examples if not _example_holds(str(e), where, len(columns) > 1)]
            changed += len(examples) - len(kept)
            outcome["examples"] = kept
        if changed:
            store.put(key, json.dumps(doc, indent=2).encode(), content_type="application/json")
            removed += changed
    return removed


def _key(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of inputs as a set member: missing values (NaN or None) compare equal."""
    return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in values)


def _holdout_matches(
    rows: pd.DataFrame, where: Where, folder: Path, erased: pd.DataFrame | None
) -> np.ndarray:
    from edgeml.privacy.where import matches

    drop = np.zeros(len(rows), dtype=bool)
    if where.column in rows.columns:
        column = pa.Table.from_pandas(rows[[where.column]], preserve_index=False)[where.column]
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())  # every value missing: no match, whatever the value's type
        with contextlib.suppress(UserError):  # a value of another type than the column's: no match
            drop |= matches(where, column).to_numpy(zero_copy_only=False)
    spec_file = folder / "spec.json"
    if erased is None or erased.empty or not spec_file.exists():
        return drop
    from pydantic import ValidationError

    from edgeml.spec.models import Spec
    from edgeml.train.data import model_inputs
    from edgeml.train.pipeline import input_layout

    try:
        layout = input_layout(Spec.model_validate_json(spec_file.read_text()))
    except ValidationError:  # a spec this release no longer reads: the column match only
        return drop
    columns = list(layout.columns)
    if any(c not in erased.columns for c in columns) or any(c not in rows.columns for c in columns):
        return drop  # trained on other columns than the feature tables hold now
    gone = {_key(r) for r in model_inputs(erased, layout)[columns].itertuples(index=False, name=None)}
    drop |= np.array([_key(r) in gone for r in rows[columns].itertuples(index=False, name=None)], dtype=bool)
    return drop


@dataclass(frozen=True)
class Experiment:
    """The MLflow experiment whose runs keep a dataset's holdout rows (``id`` None: there is none)."""

    client: Any
    id: str | None


def find_experiment(tracking_uri: str, name: str) -> Experiment:
    """The experiment named ``name``; a UserError when MLflow cannot answer. Called before anything
    is erased: the rows that find a run's holdout rows exist only until the lake is rewritten."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(name)
    except (MlflowException, OSError) as exc:
        raise UserError(
            f"MLflow at {tracking_uri} cannot be read, so nothing was erased: {exc}",
            hint="check --tracking-uri (the MLflow that trained the models on this dataset)",
        ) from exc
    return Experiment(client, None if found is None else str(found.experiment_id))


def erase_holdouts(
    experiment: Experiment, where: Where, erased: pd.DataFrame | None, *, reason: str
) -> dict[str, int]:
    """Rewrite the kept holdout rows of every run of ``experiment`` (deleted runs too: their
    artifacts stay until MLflow's garbage collection) without the erased rows; run id -> rows."""
    from mlflow.entities import ViewType

    client = experiment.client
    if experiment.id is None:
        return {}
    stamp = datetime.now(UTC)
    tag = f"edgeml.erased.{stamp.strftime('%Y%m%dT%H%M%S%fZ')}"
    out: dict[str, int] = {}
    token = None
    while True:
        runs = client.search_runs(
            [experiment.id], run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        for run in runs:
            run_id = run.info.run_id
            if HOLDOUT not in {a.path for a in client.list_artifacts(run_id, "edgeml")}:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(client.download_artifacts(run_id, "edgeml", tmp))
                rows = pd.read_parquet(folder / "holdout.parquet")
                drop = _holdout_matches(rows, where, folder, erased)
                if not drop.any():
                    continue
                rows[~drop].reset_index(drop=True).to_parquet(folder / "holdout.parquet", index=False)
                client.log_artifact(run_id, str(folder / "holdout.parquet"), "edgeml")
            out[run_id] = int(drop.sum())
            if run.info.lifecycle_stage == "active":  # a deleted run takes no tags; the audit names it
                record = {
                    "column": where.column,
                    "value_sha256": where.value_sha256,
                    "rows": out[run_id],
                    "reason": reason,
                }
                client.set_tag(run_id, tag, json.dumps(record, sort_keys=True))
        token = runs.token
        if not token:
            return out
