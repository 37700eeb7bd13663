"""Validate a snapshot against the spec's expectations.

Rows failing a row-level expectation (not_null, unique, between, in_set, regex,
monotonic_timestamp) go to quarantine with the expectation's name as reason and
are left out of the validated dataset. Severity decides what happens next: ``warn``
reports and goes on; ``error`` writes the report and quarantine, then stops with a
message naming the expectation, the column, the failing count and examples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from edgeml.errors import UserError, ValidationFailedError
from edgeml.ingest.coerce import QUARANTINE_SCHEMA
from edgeml.ingest.lake import Part, Snapshot, load_snapshot, read_parts, write_quarantine_part
from edgeml.ingest.lake import _put_part as put_part
from edgeml.privacy.access import record_read
from edgeml.settings import S3Settings, Settings
from edgeml.spec.models import Spec
from edgeml.store import ObjectStore, open_store, store_from_settings
from edgeml.validate.expectations import CHECKS, PART_COLUMN, Outcome, evaluate, expectation_name

__all__ = ["ValidationFailedError", "ValidationReport", "load_validated", "validate", "validated_parts"]


@dataclass
class ValidationReport:
    dataset: str
    snapshot: str
    rows: int
    rows_valid: int
    outcomes: list[Outcome]
    validated: list[Part] = field(default_factory=list)
    quarantine: list[Part] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.severity == "error"]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed and o.severity == "warn"]

    @property
    def passed(self) -> bool:
        return not self.errors

    def to_json(self) -> str:
        return json.dumps(
            {
                "dataset": self.dataset,
                "snapshot": self.snapshot,
                "created": self.created,
                "rows": self.rows,
                "rows_valid": self.rows_valid,
                "passed": self.passed,
                "outcomes": [o.to_json() for o in self.outcomes],
                "validated": [vars(p) for p in self.validated],
                "quarantine": [vars(p) for p in self.quarantine],
            },
            indent=2,
        )


def _report_key(dataset: str, snapshot: str) -> str:
    return f"catalog/{dataset}/validation/{snapshot}.json"


_AGGREGATE = frozenset({"row_count", "freshness", "max_missing_fraction"})


@dataclass
class _PartResult:
    """What one part's validation task sends back: counts and examples, never rows."""

    rows: int
    failing: dict[int, int]  # expectation index -> failing rows
    details: dict[int, str]  # row-level: the part's own detail line, its count first
    examples: dict[int, list[Any]]
    missing: dict[int, int]  # max_missing_fraction: missing values
    newest: dict[int, Any]  # freshness: newest timestamp
    validated: Part | None
    quarantine: Part | None


#: keys one duplicate-search task sorts at once: ~45 bytes each at its peak, so ~180 MB
_BUCKET_KEYS = 4_000_000
#: a row's key hash and its row number in its part, as the scratch objects hold them
_KEY = np.dtype([("hash", "<u8"), ("row", "<u4")])


def _scratch(dataset: str, snapshot: str) -> str:
    return f"catalog/{dataset}/validation/{snapshot}.keys/"


def _key_hashes(
    index: int,
    part: Part,
    spec: Spec,
    store_url: str,
    s3: S3Settings,
    columns: list[list[str]],
    buckets: int,
    scratch: str,
) -> None:
    """Task: a 64-bit hash of each row's key, per ``unique`` expectation, written to the scratch
    prefix split into ``buckets`` hash ranges (12 bytes a row), so no process holds every key."""
    store = open_store(store_url, s3)
    table = read_parts(store, [part], spec.schema_)
    frame = table.select(sorted({c for cols in columns for c in cols})).to_pandas()
    for e, cols in enumerate(columns):
        hashes = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
        # the top 32 bits scaled to [0, buckets): equal hashes always meet in one bucket
        bucket = ((hashes >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)
        order = np.argsort(bucket, kind="stable")  # stable: rows stay in part order per bucket
        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        for b in range(buckets):
            rows = order[bounds[b] : bounds[b + 1]]
            keys = np.empty(len(rows), dtype=_KEY)
            keys["hash"], keys["row"] = hashes[rows], rows
            store.put(f"{scratch}{e}/{b}/{index:06d}", keys.tobytes())


def _bucket_duplicates(
    expectation: int, bucket: int, parts: int, store_url: str, s3: S3Settings, scratch: str
) -> list[tuple[int, np.ndarray]]:
    """Task: in one hash range of one ``unique`` expectation, the rows whose key an earlier row
    (in lake order) has, as (part, rows of that part).

    Keys are compared by their 64-bit hashes: two different keys collide with a chance of about
    n²/2⁶⁵ (1 in 90,000 for 20 million rows).
    """
    store = open_store(store_url, s3)
    chunks = [
        np.frombuffer(store.get(f"{scratch}{expectation}/{bucket}/{p:06d}"), _KEY) for p in range(parts)
    ]
    keys = np.concatenate([c["hash"] for c in chunks])
    _, first = np.unique(keys, return_index=True)  # the first occurrence, in lake order
    later = np.ones(len(keys), dtype=bool)
    later[first] = False
    offsets = np.cumsum([0, *(len(c) for c in chunks)])
    found = [(p, chunks[p]["row"][later[offsets[p] : offsets[p + 1]]]) for p in range(parts)]
    return [(p, rows.astype(np.int64)) for p, rows in found if len(rows)]


def _duplicates(
    parts: list[Part],
    keys: list[list[str]],
    spec: Spec,
    store: ObjectStore,
    *,
    store_url: str,
    s3: S3Settings,
    scratch: str,
) -> list[list[np.ndarray]]:
    """Per part, per ``unique`` expectation: the rows whose key an earlier row (in lake order) has.

    A hash partitioning in two rounds of tasks: each part writes its key hashes to scratch
    objects by hash range, then one task per range finds the repeats. A process holds one part
    or at most ~:data:`_BUCKET_KEYS` keys, never the snapshot's; only the repeats come back here.
    """
    from edgeml.ingest.runtime import run_tasks

    out = [[np.empty(0, dtype=np.int64) for _ in keys] for _ in parts]
    if not keys or not parts:
        return out
    buckets = max(1, -(-sum(p.rows for p in parts) // _BUCKET_KEYS))
    where = {"store_url": store_url, "s3": s3, "scratch": scratch}
    try:
        calls = [(i, p) for i, p in enumerate(parts)]
        run_tasks(_key_hashes, calls, spec=spec, columns=keys, buckets=buckets, **where)
        ranges = [(e, b) for e in range(len(keys)) for b in range(buckets)]
        for (e, _), found in zip(
            ranges, run_tasks(_bucket_duplicates, ranges, parts=len(parts), **where), strict=True
        ):
            for p, rows in found:
                out[p][e] = np.concatenate([out[p][e], rows])
    finally:
        for key in store.keys(scratch):
            store.delete(key)
    return out


def _validate_part(
    index: int,
    part: Part,
    duplicates: list[np.ndarray],
    spec: Spec,
    snapshot_id: str,
    store_url: str,
    s3: S3Settings,
    now: datetime,
) -> _PartResult:
    """Task: check one lake part, write its valid rows and its quarantine; return the counts."""
    store = open_store(store_url, s3)
    table = read_parts(store, [part], spec.schema_)
    frame = table.to_pandas()
    frame[PART_COLUMN] = index  # arrival order is known within a part (monotonic_timestamp)
    expectations = list(spec.expectations)
    row_level = [(i, e) for i, e in enumerate(expectations) if e.kind not in _AGGREGATE | {"unique"}]
    outcomes = evaluate(frame, [e for _, e in row_level], spec.schema_, now)
    failing = np.zeros(len(frame), dtype=bool)
    reasons = np.full(len(frame), "", dtype=object)
    result = _PartResult(len(frame), {}, {}, {}, {}, {}, None, None)

    def record(i: int, name: str, mask: np.ndarray, detail: str, examples: list[Any]) -> None:
        nonlocal failing
        result.failing[i] = int(mask.sum())
        result.details[i] = detail
        result.examples[i] = examples
        if mask.any():
            failing |= mask
            reasons[mask] = reasons[mask] + f"{name}; "

    for (i, _), o in zip(row_level, outcomes, strict=True):
        assert o.rows is not None
        record(i, o.name, o.rows, o.detail, o.examples)
    uniques = [(i, e) for i, e in enumerate(expectations) if e.kind == "unique"]
    for (i, exp), rows in zip(uniques, duplicates, strict=True):
        mask = np.zeros(len(frame), dtype=bool)
        mask[rows] = True
        cols = list(exp.columns)
        examples = frame.loc[mask, cols].head(5).to_dict(orient="records")
        record(i, expectation_name(exp), mask, f"{int(mask.sum()):,} duplicate rows", examples)
    for i, check in enumerate(expectations):
        if check.kind == "max_missing_fraction":
            result.missing[i] = int(frame[check.column].isna().sum())
        elif check.kind == "freshness":
            newest = frame[check.column or spec.schema_.timestamp].max()
            result.newest[i] = None if pd.isna(newest) else newest.to_pydatetime()
    if failing.any():
        bad = frame[failing].drop(columns=[PART_COLUMN])
        records = bad.astype(object).where(bad.notna(), None).to_dict(orient="records")
        quarantine = pa.table(
            {
                "source": ["validation"] * len(records),
                "reason": [r.rstrip("; ") for r in reasons[failing]],
                "row": [json.dumps(r, default=str) for r in records],
            },
            schema=QUARANTINE_SCHEMA,
        )
        result.quarantine = write_quarantine_part(store, spec.name, f"validation/{snapshot_id}", quarantine)
    clean = table.filter(pa.array(~failing))
    if clean.num_rows:
        result.validated = put_part(store, f"validated/{spec.name}/{snapshot_id}", clean, "validated", "")
    return result


def _aggregate_outcome(exp: Any, i: int, results: list[_PartResult], schema: Any, now: datetime) -> Outcome:
    """row_count, freshness and max_missing_fraction from the parts' partial counts."""
    n = sum(r.rows for r in results)
    if exp.kind == "row_count":
        _, ok, detail, examples = CHECKS["row_count"](pd.DataFrame(index=pd.RangeIndex(n)), exp, schema, now)
    elif exp.kind == "freshness":
        newest = [r.newest[i] for r in results if r.newest.get(i) is not None]
        column = exp.column or schema.timestamp
        frame = pd.DataFrame({column: pd.to_datetime([max(newest)] if newest else [pd.NaT], utc=True)})
        _, ok, detail, examples = CHECKS["freshness"](frame, exp, schema, now)
    else:
        fraction = sum(r.missing[i] for r in results) / n if n else 0.0
        ok, detail, examples = fraction <= exp.max, f"{fraction:.2%} missing (allowed {exp.max:.2%})", []
    column = (exp.column or schema.timestamp) if exp.kind == "freshness" else getattr(exp, "column", None)
    return Outcome(expectation_name(exp), exp.kind, column, exp.severity, bool(ok), 0, detail, examples)


def _row_outcome(exp: Any, i: int, results: list[_PartResult], schema: Any) -> Outcome:
    failing = sum(r.failing.get(i, 0) for r in results)
    sample = next((r for r in results if i in r.details), None)
    detail = ""
    if sample is not None:  # every row-level detail starts with its count: put the total there
        count = f"{sample.failing[i]:,}"
        detail = f"{failing:,}{sample.details[i][len(count) :]}"
    examples = [e for r in results for e in r.examples.get(i, [])][:5]
    if exp.kind in ("monotonic_timestamp",):
        column = exp.column or schema.timestamp
    else:
        column = ",".join(exp.columns) if getattr(exp, "columns", None) else getattr(exp, "column", None)
    return Outcome(
        expectation_name(exp), exp.kind, column, exp.severity, failing == 0, failing, detail, examples
    )


def validate(
    spec: Spec, settings: Settings, snapshot_id: str | None = None, *, now: datetime | None = None
) -> ValidationReport:
    """Validate a snapshot (the newest by default); raise :class:`ValidationFailedError` on errors.

    Streams over the snapshot's parts: one task per part (a Ray task on the cluster when Ray
    runs) checks it and writes its valid rows and quarantine; only counts and examples come
    back. ``unique`` takes two rounds first (:func:`_duplicates`, a hash partitioning through
    scratch objects), so duplicates are found across parts (the first row in lake order is kept)
    without any process holding every key.
    """
    from edgeml.ingest.runtime import run_tasks

    store = store_from_settings(settings)
    snapshot = load_snapshot(store, spec.name, snapshot_id)
    now = now or datetime.now(UTC)
    parts = list(snapshot.parts)
    record_read(store, spec, "lake", snapshot.id, len(parts))
    shared = {"spec": spec, "store_url": settings.store_url, "s3": settings.store.s3}
    keys = [list(e.columns) for e in spec.expectations if e.kind == "unique"]
    duplicates = _duplicates(
        parts,
        keys,
        spec,
        store,
        store_url=settings.store_url,
        s3=settings.store.s3,
        scratch=_scratch(spec.name, snapshot.id),
    )
    results = run_tasks(
        _validate_part,
        [(i, p, duplicates[i]) for i, p in enumerate(parts)],
        snapshot_id=snapshot.id,
        now=now,
        **shared,
    )
    outcomes = [
        _aggregate_outcome(e, i, results, spec.schema_, now)
        if e.kind in _AGGREGATE
        else _row_outcome(e, i, results, spec.schema_)
        for i, e in enumerate(spec.expectations)
    ]
    rows = sum(r.rows for r in results)
    valid = sum(r.validated.rows for r in results if r.validated is not None)
    report = ValidationReport(spec.name, snapshot.id, rows, valid, outcomes)
    report.validated = [r.validated for r in results if r.validated is not None]
    report.quarantine = [r.quarantine for r in results if r.quarantine is not None]
    store.put(_report_key(spec.name, snapshot.id), report.to_json().encode(), content_type="application/json")
    if not report.passed:
        raise ValidationFailedError(report)
    return report


def validated_parts(
    store: ObjectStore, spec: Spec, snapshot_id: str | None = None
) -> tuple[Snapshot, list[Part]]:
    """The parts holding the validated rows of a snapshot that passed validation."""
    snapshot = load_snapshot(store, spec.name, snapshot_id)
    key = _report_key(spec.name, snapshot.id)
    if not store.exists(key):
        raise UserError(
            f"snapshot {snapshot.id} of {spec.name} has not been validated",
            hint=f"run `edgeml validate SPEC --snapshot {snapshot.id}` first",
        )
    doc: dict[str, Any] = json.loads(store.get(key))
    if not doc["passed"]:
        raise UserError(f"snapshot {snapshot.id} of {spec.name} failed validation; fix the data first")
    parts = [Part(**p) for p in doc["validated"]]
    record_read(store, spec, "validated", snapshot.id, len(parts))
    return snapshot, parts


def load_validated(
    store: ObjectStore, spec: Spec, snapshot_id: str | None = None
) -> tuple[Snapshot, pa.Table]:
    """The validated rows of a snapshot that passed validation, in one table (small data only)."""
    snapshot, parts = validated_parts(store, spec, snapshot_id)
    return snapshot, read_parts(store, parts, spec.schema_)
