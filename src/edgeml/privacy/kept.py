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
  Rows sealed under hipaa (:mod:`edgeml.privacy.sealed_rows`) are opened, and rewritten sealed,
  with the key; without it (or with another) the erasure is refused before anything is erased.
- Each model a run logged keeps an input example (``input_example.json`` and, as a serving request,
  ``serving_input_example.json``). Training logs a synthesised row there
  (:mod:`edgeml.privacy.example`); a model logged before it did keeps two real holdout rows, so an
  example holding an erased row (matched as holdout rows are) is replaced by a synthesised one.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeml.errors import UserError

if TYPE_CHECKING:
    from edgeml.privacy.sealed_rows import KeptRowsKey
    from edgeml.privacy.where import Where
    from edgeml.store.base import ObjectStore
    from edgeml.train.pipeline import InputLayout

__all__ = [
    "HOLDOUT",
    "Experiment",
    "MlflowErasure",
    "column_match",
    "erase_holdouts",
    "find_experiment",
    "inputs_match",
    "scrub_reports",
]

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


def column_match(rows: pd.DataFrame, where: Where) -> np.ndarray:
    """Which ``rows`` hold ``where``'s value in its column (none when they lack the column)."""
    from edgeml.privacy.where import matches

    drop = np.zeros(len(rows), dtype=bool)
    if where.column in rows.columns:
        column = pa.Table.from_pandas(rows[[where.column]], preserve_index=False)[where.column]
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())  # every value missing: no match, whatever the value's type
        with contextlib.suppress(UserError):  # a value of another type than the column's: no match
            drop |= matches(where, column).to_numpy(zero_copy_only=False)
    return drop


def _holdout_matches(
    rows: pd.DataFrame, where: Where, folder: Path, erased: pd.DataFrame | None
) -> np.ndarray:
    drop = column_match(rows, where)
    spec_file = folder / "spec.json"
    if erased is None or erased.empty or not spec_file.exists():
        return drop
    from pydantic import ValidationError

    from edgeml.spec.models import Spec
    from edgeml.train.pipeline import input_layout

    try:
        layout = input_layout(Spec.model_validate_json(spec_file.read_text()))
    except ValidationError:  # a spec this release no longer reads: the column match only
        return drop
    both: np.ndarray = drop | inputs_match(rows, layout, erased)
    return both


def inputs_match(rows: pd.DataFrame, layout: InputLayout, erased: pd.DataFrame) -> np.ndarray:
    """Which ``rows`` (model inputs) equal, in every input, a feature row in ``erased`` turned into
    inputs as training turns them (``layout``)."""
    from edgeml.train.data import model_inputs

    columns = list(layout.columns)
    if any(c not in erased.columns for c in columns) or any(c not in rows.columns for c in columns):
        return np.zeros(len(rows), dtype=bool)  # trained on other columns than the feature tables hold now
    gone = {_key(r) for r in model_inputs(erased, layout)[columns].itertuples(index=False, name=None)}
    return np.array([_key(r) in gone for r in rows[columns].itertuples(index=False, name=None)], dtype=bool)


@dataclass(frozen=True)
class Experiment:
    """The MLflow experiment whose runs keep a dataset's holdout rows (``id`` None: there is none)."""

    client: Any
    id: str | None
    key: KeptRowsKey | None = None  # opens the runs' rows sealed under hipaa


def find_experiment(tracking_uri: str, name: str, key: KeptRowsKey | None = None) -> Experiment:
    """The experiment named ``name``; a UserError when MLflow cannot answer, or when its runs keep
    rows sealed (hipaa) that ``key`` does not open. Called before anything is erased: the rows that
    find a run's holdout rows exist only until the lake is rewritten."""
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
    experiment = Experiment(client, None if found is None else str(found.experiment_id), key)
    _check_key(experiment)
    return experiment


def _check_key(experiment: Experiment) -> None:
    """Open one run's sealed holdout rows, if any run keeps some: the key must be here and fit."""
    from mlflow.entities import ViewType

    from edgeml.privacy.sealed_rows import SEALED_TAG, read_rows

    if experiment.id is None:
        return
    sealed = experiment.client.search_runs(
        [experiment.id], f"tags.`{SEALED_TAG}` = 'sealed'", run_view_type=ViewType.ALL, max_results=1
    )
    if not sealed:
        return
    run_id = sealed[0].info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(experiment.client.download_artifacts(run_id, HOLDOUT, tmp))
        try:
            read_rows(path, run_id=run_id, artifact=HOLDOUT, key=experiment.key)
        except UserError as exc:
            raise UserError(f"nothing was erased: {exc.message}", hint=exc.hint) from exc


@dataclass
class MlflowErasure:
    """What an erasure changed in MLflow: holdout rows per run, input examples replaced per model."""

    holdouts: dict[str, int] = field(default_factory=dict)  # run id -> holdout rows erased
    examples: dict[str, int] = field(default_factory=dict)  # logged model id -> example rows replaced


def erase_holdouts(
    experiment: Experiment, where: Where, erased: pd.DataFrame | None, *, reason: str
) -> MlflowErasure:
    """Rewrite the kept holdout rows of every run of ``experiment`` (deleted runs too: their
    artifacts stay until MLflow's garbage collection) without the erased rows, and replace the input
    example of every model those runs logged that holds one of them."""
    from mlflow.entities import ViewType

    from edgeml.privacy.sealed_rows import is_sealed, read_rows, write_rows

    client = experiment.client
    out = MlflowErasure()
    if experiment.id is None:
        return out
    stamp = datetime.now(UTC)
    tag = f"edgeml.erased.{stamp.strftime('%Y%m%dT%H%M%S%fZ')}"
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
                path = folder / "holdout.parquet"
                sealed = is_sealed(path)  # sealed stays sealed
                rows = read_rows(path, run_id=run_id, artifact=HOLDOUT, key=experiment.key)
                drop = _holdout_matches(rows, where, folder, erased)
                if drop.any():
                    rows = rows[~drop].reset_index(drop=True)
                    key = experiment.key if sealed else None
                    write_rows(rows, path, run_id=run_id, artifact=HOLDOUT, key=key)
                    client.log_artifact(run_id, str(folder / "holdout.parquet"), "edgeml")
                    out.holdouts[run_id] = int(drop.sum())
                for model_id, n in _erase_examples(experiment, run_id, where, folder, erased, rows).items():
                    out.examples[model_id] = n
            if run_id in out.holdouts and run.info.lifecycle_stage == "active":
                # a deleted run takes no tags; the audit names it
                record = {
                    "column": where.column,
                    "value_sha256": where.value_sha256,
                    "rows": out.holdouts[run_id],
                    "reason": reason,
                }
                client.set_tag(run_id, tag, json.dumps(record, sort_keys=True))
        token = runs.token
        if not token:
            return out


#: the files MLflow keeps a logged model's input example in (the second as a serving request)
EXAMPLE_FILES = ("input_example.json", "serving_input_example.json")


def _example_frame(doc: dict[str, Any]) -> pd.DataFrame | None:
    inner = doc.get("dataframe_split", doc)
    if not isinstance(inner, dict) or "columns" not in inner or "data" not in inner:
        return None  # not a table (a model of another kind): nothing of ours
    return pd.DataFrame(inner["data"], columns=inner["columns"])


def _with_rows(doc: dict[str, Any], rows: pd.DataFrame) -> dict[str, Any]:
    data = json.loads(rows.to_json(orient="split", index=False))
    inner = {**doc.get("dataframe_split", doc), "columns": data["columns"], "data": data["data"]}
    inner.pop("index", None)
    return {**doc, "dataframe_split": inner} if "dataframe_split" in doc else inner


def _erase_examples(
    experiment: Experiment,
    run_id: str,
    where: Where,
    folder: Path,
    erased: pd.DataFrame | None,
    holdout: pd.DataFrame,
) -> dict[str, int]:
    """Replace the input examples holding an erased row, of the models ``run_id`` logged, with a
    synthesised row (:mod:`edgeml.privacy.example`); logged model id -> rows replaced.

    Training logs synthesised examples; models logged before it did keep two real holdout rows."""
    client = experiment.client
    out: dict[str, int] = {}
    models = client.search_logged_models(
        [experiment.id], filter_string=f"source_run_id = '{run_id}'", max_results=100
    )
    for model in models:
        names = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
        if EXAMPLE_FILES[0] not in names:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            docs = {}
            for name in EXAMPLE_FILES:
                if name in names:
                    local = _download(f"{model.artifact_location.rstrip('/')}/{name}", tmp)
                    docs[name] = json.loads(Path(local).read_text())
            rows = _example_frame(docs[EXAMPLE_FILES[0]])
            if rows is None:
                continue
            drop = _holdout_matches(rows, where, folder, erased)
            if not drop.any():
                continue
            replacement = _synthesised(folder, holdout, list(rows.columns))
            if replacement is None:  # no spec to synthesise by: the other rows stay
                replacement = rows[~drop].reset_index(drop=True)
            upload = Path(tmp) / "upload"
            upload.mkdir()
            for name, doc in docs.items():
                (upload / name).write_text(json.dumps(_with_rows(doc, replacement)))
            client.log_model_artifacts(model.model_id, str(upload))
            out[model.model_id] = int(drop.sum())
    return out


def _download(uri: str, folder: str) -> str:
    import mlflow

    return str(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))


def _synthesised(folder: Path, holdout: pd.DataFrame, columns: list[str]) -> pd.DataFrame | None:
    from pydantic import ValidationError

    from edgeml.privacy.example import input_example
    from edgeml.spec.models import Spec
    from edgeml.train.pipeline import input_layout

    spec_file = folder / "spec.json"
    if not spec_file.exists() or any(c not in holdout.columns for c in columns):
        return None
    try:
        spec = Spec.model_validate_json(spec_file.read_text())
    except ValidationError:
        return None
    return input_example(spec, holdout[columns], input_layout(spec))
