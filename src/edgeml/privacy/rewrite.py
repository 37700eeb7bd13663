"""Taking rows out of a dataset everywhere they are stored, and recording that it was done.

Erasure (GDPR art. 17) and retention both come down to this: rows chosen by a predicate leave every
Parquet object of the dataset — lake parts (``lake/``), rejected rows (``quarantine/``), validated
parts (``validated/``) and feature tables (``features/``) — and the catalog is brought in line.

Lake parts are content-addressed and snapshots are named by the hash of their parts, so nothing is
edited in place: a part that loses rows is written anew (a new key), the old one deleted; each
snapshot that held a changed part becomes a new snapshot (new id: its parts changed) whose
validation report and feature table follow it, and the old snapshot's documents are deleted — its
rows no longer exist. ``catalog/<dataset>/rewrites/`` keeps one record per run naming every
snapshot replaced (old id → new id), so a model version tagged with an old snapshot can be traced.
The record holds counts and ids, never a value of the rows removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgeml.errors import ObjectNotFoundError
from edgeml.ingest.lake import Part, Snapshot, parquet_bytes
from edgeml.store.base import ObjectStore

__all__ = ["STAGES", "RewriteResult", "Selector", "rewrite_dataset"]

#: where a dataset's rows are stored, by stage
STAGES = ("lake", "quarantine", "validated", "features")

#: (stage, object key, table) -> which rows go; None: the whole object goes
Selector = Callable[[str, str, pa.Table], "pa.Array | None"]


@dataclass
class RewriteResult:
    """What a rewrite did: rows removed per stage, objects replaced, snapshots renamed."""

    dataset: str
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    parts: dict[str, str | None] = field(default_factory=dict)  # old key -> new key (None: emptied)
    snapshots: dict[str, str] = field(default_factory=dict)  # old id -> new id
    record: str = ""

    @property
    def removed(self) -> int:
        return sum(self.rows.values())


def _read(store: ObjectStore, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(key)))


def _write(store: ObjectStore, folder: str, table: pa.Table, like: Part) -> Part:
    """``table`` as a content-addressed part in ``folder`` (the lake's own naming)."""
    data = parquet_bytes(table)
    sha = hashlib.sha256(data).hexdigest()
    key = f"{folder}/part-{sha[:16]}.parquet"
    if not store.exists(key):
        store.put(key, data, content_type="application/vnd.apache.parquet")
    return replace(like, key=key, sha256=sha, rows=table.num_rows, bytes=len(data))


def _snapshot_id(snapshot: Snapshot, parts: list[Part]) -> str:
    """As :func:`edgeml.ingest.lake.take_snapshot` names a snapshot: schema and parts."""
    digest = hashlib.sha256(snapshot.schema_fingerprint.encode())
    for part in sorted(parts, key=lambda p: p.key):
        digest.update(f"\n{part.key} {part.sha256}".encode())
    return digest.hexdigest()[:16]


class _Rewriter:
    def __init__(self, store: ObjectStore, dataset: str, select: Selector) -> None:
        self.store, self.dataset, self.select = store, dataset, select
        self.result = RewriteResult(dataset)
        self.doomed: list[str] = []  # old objects, deleted once the catalog no longer names them
        self._known: dict[str, Part] = {}  # parts written, by key

    def part(self, stage: str, part: Part, folder: str | None = None) -> Part | None:
        """``part`` without the selected rows, in ``folder`` if given (itself when nothing changes;
        None when no row is left)."""
        if part.key in self.result.parts:
            done = self.result.parts[part.key]
            return None if done is None else self._known[done]
        here = part.key.rsplit("/", 1)[0]
        try:
            table = _read(self.store, part.key)
        except ObjectNotFoundError:
            return part  # already gone: the catalog names what it names
        mask = self.select(stage, part.key, table)
        gone = table.num_rows if mask is None else int(pc.sum(mask).as_py() or 0)
        if not gone and folder in (None, here):
            return part
        kept = table.slice(0, 0) if mask is None else table.filter(pc.invert(mask))
        self.result.rows[stage] += gone
        moved: Part | None = None
        if kept.num_rows:
            moved = _write(self.store, folder or here, kept, part)
            self._known[moved.key] = moved
        if moved is None or moved.key != part.key:
            self.doomed.append(part.key)
        self.result.parts[part.key] = None if moved is None else moved.key
        return moved

    def run(self) -> RewriteResult:
        catalog = f"catalog/{self.dataset}"
        for info in list(self.store.list(f"{catalog}/sources/")):
            doc = json.loads(self.store.get(info.key))
            parts = [self.part("lake", Part(**p)) for p in doc["parts"]]
            if any(p is None or p.key != old["key"] for p, old in zip(parts, doc["parts"], strict=True)):
                doc["parts"] = [asdict(p) for p in parts if p is not None]
                doc["updated"] = datetime.now(UTC).isoformat()
                self.store.put(info.key, json.dumps(doc, indent=1).encode(), content_type="application/json")
        for info in list(self.store.list(f"{catalog}/snapshots/")):
            self._snapshot(Snapshot.from_json(self.store.get(info.key)), info.key)
        self._quarantine_of_ingest()
        self._latest()
        for key in dict.fromkeys(self.doomed):
            if self.store.exists(key):
                self.store.delete(key)
        return self.result

    def _snapshot(self, snap: Snapshot, key: str) -> None:
        parts = [self.part("lake", p) for p in snap.parts]
        if all(p is not None and p.key == old.key for p, old in zip(parts, snap.parts, strict=True)):
            return
        kept = [p for p in parts if p is not None]
        new = replace(
            snap,
            id=_snapshot_id(snap, kept),
            created=datetime.now(UTC).isoformat(timespec="microseconds"),
            parts=tuple(sorted(kept, key=lambda p: p.key)),
            rows=sum(p.rows for p in kept),
            rows_by_source={s: sum(p.rows for p in kept if p.source == s) for s in snap.rows_by_source},
        )
        self.result.snapshots[snap.id] = new.id
        catalog = f"catalog/{self.dataset}"
        self.store.put(
            f"{catalog}/snapshots/{new.id}.json", new.to_json().encode(), content_type="application/json"
        )
        self.doomed.append(key)
        self._validation(snap.id, new.id)
        self._features(snap.id, new.id)

    def _moved(self, stage: str, doc_parts: list[dict[str, Any]], old: str, new: str) -> list[Part]:
        out = []
        for p in doc_parts:
            part = Part(**p)
            folder = part.key.rsplit("/", 1)[0].replace(f"/{old}", f"/{new}")
            moved = self.part(stage, part, folder)
            if moved is not None:
                out.append(moved)
        return out

    def _validation(self, old: str, new: str) -> None:
        key = f"catalog/{self.dataset}/validation/{old}.json"
        try:
            doc = json.loads(self.store.get(key))
        except ObjectNotFoundError:
            return
        before = dict(self.result.rows)
        doc["validated"] = [asdict(p) for p in self._moved("validated", doc["validated"], old, new)]
        doc["quarantine"] = [asdict(p) for p in self._moved("quarantine", doc["quarantine"], old, new)]
        valid_gone = self.result.rows["validated"] - before["validated"]
        bad_gone = self.result.rows["quarantine"] - before["quarantine"]
        doc["snapshot"] = new
        doc["rows"] -= valid_gone + bad_gone
        doc["rows_valid"] -= valid_gone
        self._replace_doc(key, f"catalog/{self.dataset}/validation/{new}.json", doc)

    def _features(self, old: str, new: str) -> None:
        from edgeml.features.build import feature_moments

        key = f"catalog/{self.dataset}/features/{old}.json"
        try:
            doc = json.loads(self.store.get(key))
        except ObjectNotFoundError:
            return
        parts = doc["parts"] if "parts" in doc else [doc["part"]]  # older tables were one part
        moved = self._moved("features", parts, old, new)
        if not moved:  # no row left: no table (training rebuilds it, and says the data is too small)
            self.doomed.append(key)
            return
        doc.pop("part", None)
        doc["snapshot"] = new
        doc["parts"] = [asdict(p) for p in moved]
        doc["rows"] = sum(p.rows for p in moved)
        stats = feature_moments([_read(self.store, p.key) for p in moved], doc["features"])  # what remains
        doc["stats"] = {
            n: {k: v if math.isfinite(v) else None for k, v in s.items()} for n, s in stats.items()
        }
        self._replace_doc(key, f"catalog/{self.dataset}/features/{new}.json", doc)

    def _replace_doc(self, old_key: str, new_key: str, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, indent=2, allow_nan=False).encode()
        self.store.put(new_key, data, content_type="application/json")
        if new_key != old_key:
            self.doomed.append(old_key)

    def _quarantine_of_ingest(self) -> None:
        """Rows ingestion rejected (no catalog names these parts: they are rewritten in place)."""
        prefix = f"quarantine/{self.dataset}/"
        for info in list(self.store.list(prefix)):
            if info.key.startswith(f"{prefix}validation/") or not info.key.endswith(".parquet"):
                continue  # validation's quarantine follows its snapshot
            self.part("quarantine", Part(info.key, info.sha256 or "", 0, info.size))

    def _latest(self) -> None:
        key = f"catalog/{self.dataset}/latest.json"
        try:
            latest = json.loads(self.store.get(key))["id"]
        except ObjectNotFoundError:
            return
        if latest in self.result.snapshots:
            doc = json.dumps({"id": self.result.snapshots[latest]}).encode()
            self.store.put(key, doc, content_type="application/json")


def rewrite_dataset(
    store: ObjectStore, dataset: str, select: Selector, *, action: str, summary: dict[str, Any]
) -> RewriteResult:
    """Remove the rows ``select`` picks from every stage of ``dataset``; record the run (``action``,
    ``summary``: what asked for it, without values) under ``catalog/<dataset>/rewrites/`` when it
    changed anything."""
    result = _Rewriter(store, dataset, select).run()
    if not result.parts:
        return result  # nothing changed: nothing to record
    at = datetime.now(UTC)
    record = {
        "action": action,
        "at": at.isoformat(timespec="microseconds"),
        **summary,
        "rows": result.rows,
        "snapshots": result.snapshots,
        "parts": result.parts,
    }
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    key = f"catalog/{dataset}/rewrites/{at.strftime('%Y%m%dT%H%M%S%fZ')}-{action}.json"
    store.put(key, data, content_type="application/json")
    result.record = key
    return result
