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
import pyarrow as pa

from edgeml.errors import UserError
from edgeml.ingest.coerce import QUARANTINE_SCHEMA
from edgeml.ingest.lake import Part, Snapshot, load_snapshot, read_parts, write_quarantine_part
from edgeml.ingest.lake import _put_part as put_part
from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.store import ObjectStore, store_from_settings
from edgeml.validate.expectations import PART_COLUMN, Outcome, evaluate

__all__ = ["ValidationFailedError", "ValidationReport", "load_validated", "validate"]


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


class ValidationFailedError(UserError):
    """An ``error``-severity expectation failed; the report and quarantine are written."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        lines = [f"validation of {report.dataset} snapshot {report.snapshot} failed:"]
        for o in report.errors:
            where = f" on column {o.column}" if o.column else ""
            examples = f"; e.g. {', '.join(map(str, o.examples[:3]))}" if o.examples else ""
            lines.append(f"  - {o.name}{where}: {o.detail}{examples}")
        super().__init__(
            "\n".join(lines),
            hint=f"see catalog/{report.dataset}/validation/"
            f"{report.snapshot}.json and quarantine/{report.dataset}/validation/",
        )


def _report_key(dataset: str, snapshot: str) -> str:
    return f"catalog/{dataset}/validation/{snapshot}.json"


def validate(
    spec: Spec, settings: Settings, snapshot_id: str | None = None, *, now: datetime | None = None
) -> ValidationReport:
    """Validate a snapshot (the newest by default); raise :class:`ValidationFailedError` on errors."""
    store = store_from_settings(settings)
    snapshot = load_snapshot(store, spec.name, snapshot_id)
    tables = [read_parts(store, [part], spec.schema_) for part in snapshot.parts]
    table = pa.concat_tables(tables) if tables else read_parts(store, [], spec.schema_)
    frame = table.to_pandas()
    # Rows arrive in order within a part (a file block, a stream micro-batch), not across parts.
    frame[PART_COLUMN] = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    outcomes = evaluate(frame, list(spec.expectations), spec.schema_, now)
    failing = np.zeros(len(frame), dtype=bool)
    reasons = np.full(len(frame), "", dtype=object)
    for o in outcomes:
        if o.rows is not None and o.rows.any():
            failing |= o.rows
            reasons[o.rows] = reasons[o.rows] + f"{o.name}; "
    report = ValidationReport(spec.name, snapshot.id, len(frame), int((~failing).sum()), outcomes)
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
        part = write_quarantine_part(store, spec.name, f"validation/{snapshot.id}", quarantine)
        report.quarantine = [part] if part else []
    clean = table.filter(pa.array(~failing))
    report.validated = [put_part(store, f"validated/{spec.name}/{snapshot.id}", clean, "validated", "")]
    store.put(_report_key(spec.name, snapshot.id), report.to_json().encode(), content_type="application/json")
    if not report.passed:
        raise ValidationFailedError(report)
    return report


def load_validated(
    store: ObjectStore, spec: Spec, snapshot_id: str | None = None
) -> tuple[Snapshot, pa.Table]:
    """The validated rows of a snapshot that passed validation."""
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
    return snapshot, read_parts(store, parts, spec.schema_)
