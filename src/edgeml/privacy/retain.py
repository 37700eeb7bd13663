"""``edgeml data retain``: rows older than the retention period out of every stage of a dataset.

Age is event time: the schema's timestamp column where there is one (a row at a time), else the
date the lake part was landed (``date=YYYY-MM-DD`` in its key, a part at a time). Rejected rows are
aged by the timestamp in their JSON text; one without a readable time is kept. The job is
idempotent — a second run the same day removes nothing — so it can run from a timer (see
docs/compliance.md). It never touches the audit trail, which is kept for ``audit.RETENTION_DAYS``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from edgeml.audit import AuditLog
from edgeml.errors import UserError
from edgeml.privacy.rewrite import RewriteResult, rewrite_dataset
from edgeml.store.base import ObjectStore

__all__ = ["retain"]

_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


def _older(text: str | None, column: str, cutoff: datetime) -> bool:
    try:
        value = json.loads(text).get(column) if text else None
        at = datetime.fromisoformat(str(value)) if value is not None else None
    except (ValueError, AttributeError):
        return False
    if at is None:
        return False
    return (at if at.tzinfo else at.replace(tzinfo=UTC)) < cutoff


def retain(
    store: ObjectStore,
    dataset: str,
    timestamp: str | None,
    days: int,
    *,
    actor: str,
    now: datetime | None = None,
) -> RewriteResult:
    """Remove rows of ``dataset`` older than ``days`` (event time: the ``timestamp`` column)."""
    if days < 1:
        raise UserError(f"retention of {days} days: it must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)

    def select(stage: str, key: str, table: pa.Table) -> pa.Array | None:
        if timestamp is not None and timestamp in table.column_names:
            column = table[timestamp]
            at = cutoff if column.type.tz else cutoff.replace(tzinfo=None)
            limit = pa.scalar(at).cast(column.type, safe=False)  # to the column's unit, truncated
            return pc.fill_null(pc.less(column, limit), False).combine_chunks()
        if stage == "quarantine" and timestamp is not None and "row" in table.column_names:
            return pa.array([_older(t, timestamp, cutoff) for t in table["row"].to_pylist()], pa.bool_())
        landed = _DATE.search(key)
        if stage == "lake" and landed and landed.group(1) < cutoff.date().isoformat():
            return None  # landed before the cutoff day: the whole part
        return pa.array([False] * table.num_rows, pa.bool_())

    summary = {"retention_days": days, "cutoff": cutoff.isoformat(timespec="seconds"), "actor": actor}
    result = rewrite_dataset(store, dataset, select, action="retain", summary=summary)
    if result.removed:
        AuditLog(store).append(
            actor,
            "data.retain",
            dataset,
            after={"cutoff": summary["cutoff"], "rows": result.rows, "snapshots": result.snapshots},
            reason=f"retention of {days} days",
        )
    return result
