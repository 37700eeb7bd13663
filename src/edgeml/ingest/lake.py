"""The lake and its catalog on the object store.

Layout (keys)::

    lake/<dataset>/<source>/date=YYYY-MM-DD/part-<sha16>.parquet   clean rows, by event date
    quarantine/<dataset>/<source>/part-<sha16>.parquet             rejected rows + reason
    catalog/<dataset>/sources/<source>.json                        the source's current parts
    catalog/<dataset>/snapshots/<id>.json                          an immutable dataset version
    catalog/<dataset>/latest.json                                  the id of the snapshot taken last

Parts are content-addressed and never rewritten, so a snapshot stays readable for as
long as its parts are kept. A bounded source (file, SQL, HTTP) re-read from scratch
*replaces* its part list; a stream (MQTT) *appends* to it. A snapshot is the union of
every source's current parts; its id is a hash of their keys and content hashes plus
the schema, so the same data under the same schema always gets the same id. The newest
snapshot is the one taken last (``latest.json``): re-taking an older snapshot, after the data
went back to an earlier state, makes it the newest again although its file is not rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from edgeml.errors import ObjectNotFoundError, UserError
from edgeml.spec.models import Schema, Spec
from edgeml.store import ObjectStore

__all__ = [
    "Part",
    "Snapshot",
    "list_snapshots",
    "load_snapshot",
    "parquet_bytes",
    "part_bytes",
    "read_parts",
    "record_source_parts",
    "schema_fingerprint",
    "take_snapshot",
    "write_clean_parts",
    "write_quarantine_part",
]


@dataclass(frozen=True)
class Part:
    """One Parquet file in the lake."""

    key: str
    sha256: str
    rows: int
    bytes: int
    source: str = ""
    date: str = ""


@dataclass(frozen=True)
class Snapshot:
    """An immutable version of a dataset: the parts that make it up, and how it came to be."""

    id: str
    dataset: str
    created: str
    schema_fingerprint: str
    parts: tuple[Part, ...]
    rows: int
    rows_by_source: Mapping[str, int] = field(default_factory=dict)
    spec_fingerprint: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        data = json.loads(text)
        data["parts"] = tuple(Part(**p) for p in data["parts"])
        return cls(**data)


def schema_fingerprint(schema: Schema) -> str:
    canonical = json.dumps(schema.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table to Parquet (zstd). Same rows in, same bytes out."""
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), sink, compression="zstd")
    return sink.getvalue()


def _put_part(store: ObjectStore, prefix: str, table: pa.Table, source: str, date: str) -> Part:
    data = parquet_bytes(table)
    sha = hashlib.sha256(data).hexdigest()
    key = f"{prefix}/part-{sha[:16]}.parquet"
    if not store.exists(key):  # content-addressed: an identical part is already there
        store.put(key, data, content_type="application/vnd.apache.parquet")
    return Part(key=key, sha256=sha, rows=table.num_rows, bytes=len(data), source=source, date=date)


def write_clean_parts(
    store: ObjectStore, dataset: str, source: str, table: pa.Table, timestamp: str | None
) -> list[Part]:
    """Write clean rows, one part per event date (ingestion date without a timestamp column)."""
    if table.num_rows == 0:
        return []
    base = f"lake/{dataset}/{source}"
    if timestamp is None:
        today = datetime.now(UTC).date().isoformat()
        return [_put_part(store, f"{base}/date={today}", table, source, today)]
    # The UTC calendar day; a cast to date32 is an order of magnitude cheaper than strftime.
    days = pc.cast(table[timestamp], pa.date32())
    parts = []
    for day in sorted(days.unique().to_pylist(), key=lambda d: (d is None, d)):
        chunk = table.filter(pc.is_null(days) if day is None else pc.equal(days, pa.scalar(day, pa.date32())))
        label = "unknown" if day is None else day.isoformat()
        parts.append(_put_part(store, f"{base}/date={label}", chunk, source, label))
    return parts


def write_quarantine_part(store: ObjectStore, dataset: str, source: str, table: pa.Table) -> Part | None:
    if table.num_rows == 0:
        return None
    return _put_part(store, f"quarantine/{dataset}/{source}", table, source, "")


def _source_key(dataset: str, source: str) -> str:
    return f"catalog/{dataset}/sources/{source}.json"


def source_parts(store: ObjectStore, dataset: str, source: str) -> list[Part]:
    try:
        data = json.loads(store.get(_source_key(dataset, source)))
    except ObjectNotFoundError:
        return []
    return [Part(**p) for p in data["parts"]]


def record_source_parts(
    store: ObjectStore, dataset: str, source: str, parts: Iterable[Part], *, append: bool
) -> list[Part]:
    """Make ``parts`` the source's current parts (or add them, for a stream)."""
    merged = source_parts(store, dataset, source) if append else []
    known = {p.key for p in merged}
    for part in parts:
        if part.key not in known:  # content-addressed: the same key is the same rows
            known.add(part.key)
            merged.append(part)
    doc = {"source": source, "updated": datetime.now(UTC).isoformat(), "parts": [asdict(p) for p in merged]}
    store.put(
        _source_key(dataset, source), json.dumps(doc, indent=1).encode(), content_type="application/json"
    )
    return merged


def take_snapshot(store: ObjectStore, spec: Spec) -> Snapshot:
    """Record the dataset as it stands now (every source's current parts) and return it."""
    parts: list[Part] = []
    for source in spec.sources:
        parts.extend(source_parts(store, spec.name, source.name))
    parts.sort(key=lambda p: p.key)
    schema_fp = schema_fingerprint(spec.schema_)
    digest = hashlib.sha256(schema_fp.encode())
    for part in parts:
        digest.update(f"\n{part.key} {part.sha256}".encode())
    snapshot = Snapshot(
        id=digest.hexdigest()[:16],
        dataset=spec.name,
        created=datetime.now(UTC).isoformat(timespec="microseconds"),
        schema_fingerprint=schema_fp,
        parts=tuple(parts),
        rows=sum(p.rows for p in parts),
        rows_by_source={s.name: sum(p.rows for p in parts if p.source == s.name) for s in spec.sources},
        spec_fingerprint=spec.fingerprint(),
    )
    key = f"catalog/{spec.name}/snapshots/{snapshot.id}.json"
    if store.exists(key):  # the same data as before: that snapshot, as first recorded
        snapshot = Snapshot.from_json(store.get(key))
    else:
        store.put(key, snapshot.to_json().encode(), content_type="application/json")
    store.put(
        _latest_key(spec.name), json.dumps({"id": snapshot.id}).encode(), content_type="application/json"
    )
    return snapshot


def _latest_key(dataset: str) -> str:
    return f"catalog/{dataset}/latest.json"


def list_snapshots(store: ObjectStore, dataset: str) -> list[Snapshot]:
    """Every snapshot of ``dataset``, oldest first."""
    snaps = [
        Snapshot.from_json(store.get(info.key))
        for info in store.list(f"catalog/{dataset}/snapshots/")
        if info.key.endswith(".json")
    ]
    return sorted(snaps, key=lambda s: (s.created, s.id))


def load_snapshot(store: ObjectStore, dataset: str, snapshot_id: str | None = None) -> Snapshot:
    """A snapshot by id (a unique prefix will do), or the newest one (the one taken last)."""
    snaps = list_snapshots(store, dataset)
    if not snaps:
        raise UserError(f"dataset {dataset!r} has no snapshot yet", hint="run `edgeml ingest` first")
    if snapshot_id is None:
        try:
            latest = json.loads(store.get(_latest_key(dataset)))["id"]
        except ObjectNotFoundError:
            return snaps[-1]
        return next((s for s in snaps if s.id == latest), snaps[-1])
    matches = [s for s in snaps if s.id.startswith(snapshot_id)]
    if len(matches) != 1:
        known = ", ".join(s.id for s in snaps[-5:])
        what = "no" if not matches else "more than one"
        raise UserError(f"{what} snapshot of {dataset!r} matches {snapshot_id!r} (latest: {known})")
    return matches[0]


def part_bytes(store: ObjectStore, part: Part) -> bytes:
    """A part's Parquet bytes, its sha256 verified on the way (an altered part is refused)."""
    data = store.get(part.key)
    if hashlib.sha256(data).hexdigest() != part.sha256:
        raise UserError(f"lake part {part.key} does not match its recorded sha256; it was altered")
    return data


def read_parts(store: ObjectStore, parts: Sequence[Part], schema: Schema | None = None) -> pa.Table:
    """Read parts into one table, verifying each part's sha256 on the way."""
    from edgeml.ingest.coerce import arrow_schema

    tables = [pq.read_table(io.BytesIO(part_bytes(store, part))) for part in parts]
    if not tables:
        return arrow_schema(schema).empty_table() if schema is not None else pa.table({})
    return pa.concat_tables(tables, promote_options="default")
