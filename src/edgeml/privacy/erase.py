"""``edgeml data erase``: a data subject's rows out of every stage of a dataset (GDPR art. 17).

``--where "<column> = <value>"`` names the rows: a column, ``=``, and a value — a number, or text,
quoted ('…' or "…") when it holds spaces or could read as a number. Nothing else is accepted: an
erasure that matched more or less than meant cannot be undone, so a clause it cannot read is
refused before anything is touched. Rows rejected at ingestion or validation (kept as JSON text)
are matched on the same column. Copies kept outside the stages follow (:mod:`edgeml.privacy.kept`):
validation reports' failing examples, the holdout rows MLflow keeps for each run and the input
examples of the models it logged. The audit trail
records the column and the sha256 of the value, never the value: the log must not keep what was erased.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from edgeml.audit import AuditLog
from edgeml.errors import UserError
from edgeml.privacy.rewrite import RewriteResult, rewrite_dataset
from edgeml.privacy.where import Where, matches
from edgeml.store.base import ObjectStore

if TYPE_CHECKING:
    from edgeml.privacy.sealed_rows import KeptRowsKey
    from edgeml.train.pipeline import InputLayout

__all__ = ["Erasure", "erase", "lake_columns"]


def _rejected_matches(where: Where, rows: pa.ChunkedArray) -> pa.Array:
    """Rejected rows (JSON text, as written before they were coerced) whose column equals the value."""
    out = []
    for text in rows.to_pylist():
        try:
            value = json.loads(text).get(where.column) if text else None
        except (ValueError, AttributeError):
            value = None
        out.append(value is not None and (value == where.value or str(value) == str(where.value)))
    return pa.array(out, pa.bool_())


def lake_columns(store: ObjectStore, dataset: str) -> set[str]:
    """The columns of the dataset's lake parts (the first one found), for a dataset named without its spec."""
    import io

    import pyarrow.parquet as pq

    key = next((k for k in store.keys(f"lake/{dataset}/") if k.endswith(".parquet")), None)
    if key is None:
        raise UserError(
            f"dataset {dataset!r} has nothing in the lake", hint="check the name: the spec's `name`"
        )
    return set(pq.read_schema(io.BytesIO(store.get(key))).names)


@dataclass
class Erasure:
    """What an erasure did, by place: the dataset's stages, validation examples, MLflow holdouts."""

    lake: RewriteResult
    examples: int = 0  # failing examples taken out of validation reports
    holdouts: dict[str, int] = field(default_factory=dict)  # MLflow run id -> holdout rows erased
    model_examples: dict[str, int] = field(default_factory=dict)  # logged model id -> example rows replaced
    bundles: dict[str, int] = field(default_factory=dict)  # manifest key -> its golden rows that match
    tracking: str | None = None  # the MLflow tracking searched (None: none)


def erase(
    store: ObjectStore,
    dataset: str,
    where: Where,
    *,
    actor: str,
    reason: str,
    columns: set[str] | None = None,
    tracking: str | None = None,
    layout: InputLayout | None = None,
    kept_key: KeptRowsKey | None = None,
) -> Erasure:
    """Remove every row of ``dataset`` matching ``where`` from the lake, quarantine, validated parts and
    feature tables; new snapshots replace the ones that held them; validation reports' examples and,
    with ``tracking`` (an MLflow tracking URI), the holdout rows kept by each run of the dataset's
    experiment follow; audited.

    ``columns`` (the spec's schema, when known) lets a misspelt column be refused before any work;
    ``layout`` (its model inputs) lets published golden rows be matched through the inputs
    (:mod:`edgeml.privacy.published`), which are found, never rewritten. ``kept_key`` opens the
    holdout rows runs keep sealed (hipaa, :mod:`edgeml.privacy.sealed_rows`).
    """
    from edgeml.privacy.kept import erase_holdouts, find_experiment, scrub_reports
    from edgeml.privacy.published import bundles_holding

    if columns is None:
        columns = lake_columns(store, dataset)
    if where.column not in columns:
        known = ", ".join(sorted(columns))
        raise UserError(f"--where names column {where.column!r}, which {dataset} does not have ({known})")
    experiment = find_experiment(tracking, dataset, kept_key) if tracking is not None else None

    erased_features: list[pa.Table] = []  # what a run's holdout rows were made from

    def select(stage: str, key: str, table: pa.Table) -> pa.Array:
        if where.column in table.column_names:
            mask = matches(where, table[where.column])
            if stage == "features":
                erased_features.append(table.filter(mask))
            return mask
        if "row" in table.column_names and stage == "quarantine":
            return _rejected_matches(where, table["row"])
        return pa.array([False] * table.num_rows, pa.bool_())

    summary = {"column": where.column, "value_sha256": where.value_sha256, "reason": reason, "actor": actor}
    result = rewrite_dataset(store, dataset, select, action="erase", summary=summary)
    done = Erasure(result, scrub_reports(store, dataset, where), tracking=tracking)
    frames = [t.to_pandas() for t in erased_features if t.num_rows]
    erased = pd.concat(frames, ignore_index=True) if frames else None
    done.bundles = bundles_holding(store, dataset, where, layout, erased)
    if experiment is not None:
        mlflow_done = erase_holdouts(experiment, where, erased, reason=reason)
        done.holdouts, done.model_examples = mlflow_done.holdouts, mlflow_done.examples
    AuditLog(store).append(
        actor,
        "data.erase",
        dataset,
        after={
            "column": where.column,
            "value_sha256": where.value_sha256,
            "rows": result.rows,
            "snapshots": result.snapshots,
            "record": result.record,
            "validation_examples": done.examples,
            "mlflow_holdouts": done.holdouts,
            "mlflow_input_examples": done.model_examples,
            "published_bundles": done.bundles,
        },
        reason=reason,
    )
    return done
