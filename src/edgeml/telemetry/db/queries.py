"""Reads of the telemetry file, each on a reader's cursor.

:func:`batches` rebuilds batches from their payloads and child rows: exact, and what a window
of minutes needs. :func:`pooled_windows` sums the child tables in SQL instead, the way
:func:`edgeml.central.drift.pool` sums batches, without reading a payload: what a day of a
fleet needs (:func:`edgeml.central.drift.pool_stored` picks).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from edgeml.bundle.manifest import Histogram
from edgeml.telemetry.db.batch_group import rebuilt
from edgeml.telemetry.db.tables import EPOCH, from_us
from edgeml.telemetry.schema import (
    CalibratedSums,
    FeatureTelemetry,
    FeedbackRecord,
    LabelledRow,
    PooledWindow,
    RowsPoint,
    TelemetryBatch,
)

__all__ = ["Reader", "batches", "feedback", "labelled_rows", "pooled_windows", "profiles", "rows_over_time"]

#: a read-only cursor on the store, for the duration of a ``with``
Reader = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _where(conditions: list[str]) -> str:
    return " AND ".join(conditions) or "true"


def _filters(
    *,
    model: str | None,
    version: int | None,
    group: str | None,
    since: datetime | None,
    until: datetime | None,
    time: str = "window_end",
) -> tuple[list[str], dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, name, value in (("model", "model", model), ("version", "version", version)):
        if value is not None:
            where.append(f"{column} = ${name}")
            params[name] = value
    if group is not None:
        where.append("device_group = $group")
        params["group"] = group
    if since is not None:
        where.append(f"{time} > $since")
        params["since"] = since
    if until is not None:
        where.append(f"{time} <= $until")
        params["until"] = until
    return where, params


def _by_seq(rows: pa.Table) -> dict[int, dict[str, dict[str, Any]]]:
    """Child-table rows (``seq``, ``name``, the histogram's fields) per batch and name."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    fields = [f for f in rows.column_names if f not in ("seq", "name")]
    seqs, names, *columns = (rows.column(f).to_pylist() for f in ("seq", "name", *fields))
    for seq, name, *values in zip(seqs, names, *columns, strict=True):
        out.setdefault(seq, {})[name] = dict(zip(fields, values, strict=True))
    return out


def batches(
    reader: Reader,
    model: str | None = None,
    version: int | None = None,
    group: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    device: str | None = None,
) -> list[TelemetryBatch]:
    """Stored batches whose window ended in (``since``, ``until``], oldest window first.

    Consecutive ranges thus never share a batch. Filters left as None match everything.
    """
    where, params = _filters(model=model, version=version, group=group, since=since, until=until)
    if device is not None:
        where.append("device_id = $device")
        params["device"] = device
    chosen = f"FROM batches WHERE {_where(where)}"
    with reader() as cur:

        def read(sql: str) -> pa.Table:
            return cur.sql(sql, params=params).to_arrow_table()

        cur.execute("BEGIN TRANSACTION")  # one snapshot: compaction may delete in between
        try:
            found = read(f"SELECT seq, payload {chosen} ORDER BY window_end, seq")
            features = _by_seq(
                read(
                    'SELECT seq, feature AS name, edges, categories AS "values", counts, missing, '  # noqa: S608 (fixed SQL; values are bound)
                    f"out_of_range FROM batch_features WHERE seq IN (SELECT seq {chosen})"
                )
            )
            scores = _by_seq(
                read(
                    "SELECT seq, score AS name, edges, counts, missing FROM batch_scores "  # noqa: S608 (as above)
                    f"WHERE seq IN (SELECT seq {chosen})"
                )
            )
        finally:
            cur.execute("ROLLBACK")  # read only: nothing to keep
    seqs, payloads = (found.column(c).to_pylist() for c in ("seq", "payload"))
    return [rebuilt(p, features.get(q, {}), scores.get(q, {})) for q, p in zip(seqs, payloads, strict=True)]


def pooled_windows(
    reader: Reader,
    window: timedelta | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    version: int | None = None,
    group: str | None = None,
) -> list[PooledWindow] | None:
    """The batches :func:`batches` selects (same filters), pooled by the database; or None.

    ``window`` pools as :func:`edgeml.central.drift.pool` does (per model, version, group
    and epoch-aligned window of ``window_start``; ordered the same way); None pools each
    model, version and group into one window, as :func:`~edgeml.central.drift.pool_window`.
    The sums come from the child tables, so no payload is read or parsed; floating-point
    sums are added in batch order, as pooling the batches does, so the windows are the same
    with two exceptions: no row ``sample`` (it is in the payloads only), and a label counted
    0 times by every batch is not in ``predictions`` (``.get(label, 0)`` reads the same).

    None when a window cannot be pooled this way: its batches disagree on an input's or a
    score's bins (pooling the batches raises then), or a fingerprint is missing. The caller
    then pools :func:`batches` itself (see :func:`edgeml.central.drift.pool_stored`).
    """
    where, params = _filters(model=model, version=version, group=group, since=since, until=until)
    with reader() as cur:
        return _pool_in_sql(cur, _where(where), params, window)


def profiles(
    reader: Reader, since: datetime | None = None, until: datetime | None = None
) -> dict[tuple[str, int], str]:
    """(model, version) -> a firmware profile that sent batches in (``since``, ``until``].

    A version's manifests per profile carry the same reference data, so any one will do to
    judge its telemetry; the latest profile seen is taken.
    """
    where, params = _filters(model=None, version=None, group=None, since=since, until=until)
    sql = (
        "SELECT model, version, arg_max(profile, window_end) FROM batches "  # noqa: S608 (fixed SQL; values are bound)
        f"WHERE {_where(where)} GROUP BY model, version"
    )
    with reader() as cur:
        rows = cur.execute(sql, params).fetchall()
    return {(str(m), int(v)): str(p) for m, v, p in rows}


def rows_over_time(reader: Reader, since: datetime, bucket: timedelta) -> list[RowsPoint]:
    """Rows predicted per device group per time bucket (by window end), since ``since``."""
    sql = """
        SELECT device_group, epoch_us(time_bucket($bucket, window_end, $origin)) AS start,
               sum(row_count)::BIGINT AS rows
        FROM batches WHERE window_end > $since GROUP BY ALL ORDER BY start, device_group
    """
    params = {"bucket": bucket, "since": since, "origin": since}
    with reader() as cur:
        found = cur.sql(sql, params=params).to_arrow_table().to_pylist()
    return [RowsPoint(group=r["device_group"], start=from_us(r["start"]), rows=r["rows"]) for r in found]


def feedback(
    reader: Reader,
    model: str | None = None,
    version: int | None = None,
    group: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[FeedbackRecord]:
    """Labels received in (``since``, ``until``], the latest per prediction id, with the device group."""
    where, params = _filters(
        model=model, version=version, group=group, since=since, until=until, time="received_at"
    )
    # the filters apply to the latest label per id, so an older label cannot resurface
    # what the caller left out is taken from the device's logged prediction, once it arrived
    latest = """
        SELECT f.prediction_id, f.label, f.received_at, f.source,
               coalesce(f.predicted, p.prediction) AS predicted, coalesce(f.model, p.model) AS model,
               coalesce(f.version, p.version) AS version, coalesce(f.device_id, p.device_id) AS device_id,
               d.device_group
        FROM feedback f
        LEFT JOIN (SELECT * FROM predictions
                   QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY received_at) = 1) p
          USING (prediction_id)
        LEFT JOIN devices d ON d.device_id = coalesce(f.device_id, p.device_id)
        QUALIFY row_number() OVER (PARTITION BY f.prediction_id ORDER BY f.received_at DESC) = 1
    """
    columns = "prediction_id, label, predicted, model, version, device_id, device_group, source"
    sql = (
        f"SELECT {columns}, epoch_us(received_at) AS received_us FROM ({latest}) "  # noqa: S608 (fixed SQL; values are bound)
        f"WHERE {_where(where)} ORDER BY received_at"
    )
    with reader() as cur:
        found = cur.sql(sql, params=params).to_arrow_table().to_pylist()
    return [
        FeedbackRecord(
            prediction_id=r["prediction_id"],
            label=json.loads(r["label"]),
            predicted=_loads(r["predicted"]),
            model=r["model"],
            version=r["version"],
            device_id=r["device_id"],
            group=r["device_group"],
            received_at=from_us(r["received_us"]),
            source=r["source"],
        )
        for r in found
    ]


def labelled_count(reader: Reader, model: str, since: datetime | None = None) -> int:
    """How many predictions of ``model`` have a label whose latest arrived after ``since``."""
    sql = """
        SELECT count(*) FROM (SELECT * FROM feedback
              QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY received_at DESC) = 1) f
        WHERE (? IS NULL OR f.received_at > ?)
          AND f.prediction_id IN (SELECT prediction_id FROM predictions WHERE model = ?)
    """
    with reader() as cur:
        row = cur.execute(sql, [since, since, model]).fetchone()
    return int(row[0]) if row else 0


def labelled_rows(reader: Reader, model: str, since: datetime | None = None) -> list[LabelledRow]:
    """Each prediction of ``model`` with a label, joined (the latest label per id), by label arrival.

    ``since``: only rows whose latest label arrived after it.
    """
    sql = """
        SELECT p.prediction_id, p.model, p.version, p.device_id, epoch_us(p.predicted_at) AS predicted_us,
               p.inputs, p.prediction, f.label, epoch_us(f.received_at) AS labelled_us
        FROM (SELECT * FROM feedback
              QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY received_at DESC) = 1) f
        JOIN (SELECT * FROM predictions
              QUALIFY row_number() OVER (PARTITION BY prediction_id ORDER BY received_at) = 1) p
          USING (prediction_id)
        WHERE p.model = ? AND (? IS NULL OR f.received_at > ?)
        ORDER BY f.received_at, p.prediction_id
    """
    with reader() as cur:
        found = cur.sql(sql, params=[model, since, since]).to_arrow_table().to_pylist()
    return [
        LabelledRow(
            prediction_id=r["prediction_id"],
            model=r["model"],
            version=r["version"],
            device_id=r["device_id"],
            predicted_at=from_us(r["predicted_us"]),
            inputs=json.loads(r["inputs"]),
            prediction=_loads(r["prediction"]),
            label=json.loads(r["label"]),
            labelled_at=from_us(r["labelled_us"]),
        )
        for r in found
    ]


def _pool_in_sql(
    cur: duckdb.DuckDBPyConnection, where: str, params: dict[str, Any], window: timedelta | None
) -> list[PooledWindow] | None:
    if window is not None:
        step = window.total_seconds()
        if step <= 0:
            raise ValueError("the pooling window must be positive")
        # the float arithmetic of drift.pool: window_start.timestamp() / step, floored
        slot = "floor(epoch_us(window_start)::DOUBLE / 1e6 / $step)"
        key = f"model, version, coalesce(device_group, ''), {slot}"
        params = params | {"step": step}
    else:
        slot, key = "NULL::DOUBLE", "model, version, device_group"
    # each selected batch: its window (wid, in the order drift.pool returns windows) and its
    # place in the order batches() returns them (ord), which pooling adds them up in
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _pool AS SELECT seq, model, version, device_group, "  # noqa: S608 (our SQL; values are bound)
        "window_start, window_end, row_count, calibrated_rows, expected_correct, errors, "
        f"{slot} AS slot, row_number() OVER (ORDER BY window_end, seq) AS ord, "
        f"dense_rank() OVER (ORDER BY {key}) AS wid FROM batches WHERE {where}",
        params,
    )
    try:
        return _pooled(cur, window)
    finally:
        cur.execute("DROP TABLE IF EXISTS _pool")


def _pooled(cur: duckdb.DuckDBPyConnection, window: timedelta | None) -> list[PooledWindow] | None:
    heads = cur.execute(
        "SELECT wid, any_value(model), any_value(version), arg_min_null(device_group, ord), any_value(slot), "
        "count(*), sum(row_count), epoch_us(min(window_start)), epoch_us(max(window_end)), arg_min(seq, ord) "
        "FROM _pool GROUP BY wid ORDER BY wid"
    ).fetchall()
    if not heads:
        return []
    firsts = [h[-1] for h in heads]
    features = _histograms(cur, "batch_features", "feature", firsts, filled_only=True)
    scores = _histograms(cur, "batch_scores", "score", firsts, filled_only=False)
    if features is None or scores is None:
        return None
    predictions: dict[int, dict[str, int]] = {}
    for wid, label, count in cur.execute(
        "SELECT p.wid, l.label, sum(l.predicted) FROM batch_labels l JOIN _pool p USING (seq) "
        "GROUP BY ALL HAVING sum(l.predicted) > 0 ORDER BY p.wid, min(p.ord)"
    ).fetchall():
        predictions.setdefault(wid, {})[label] = int(count)
    errors: dict[int, dict[str, int]] = {}
    for wid, kind, count in cur.execute(
        "SELECT p.wid, e.key, sum(e.value::BIGINT) FROM _pool p, json_each(p.errors) e "
        "WHERE p.errors <> '{}' GROUP BY ALL ORDER BY p.wid, min(p.ord)"
    ).fetchall():
        errors.setdefault(wid, {})[kind] = int(count)
    calibration = _calibration(cur)
    out = []
    for wid, model, version, group, slot, batches, rows, first_us, last_us, _ in heads:
        if window is not None:
            start = datetime.fromtimestamp(slot * window.total_seconds(), UTC)
            end = start + window
        else:
            start, end = EPOCH + timedelta(microseconds=first_us), EPOCH + timedelta(microseconds=last_us)
        out.append(
            PooledWindow(
                model=model,
                version=version,
                group=group,
                start=start,
                end=end,
                batches=int(batches),
                rows=int(rows),
                features=features.get(wid, {}),
                scores=scores.get(wid, {}),
                predictions=predictions.get(wid, {}),
                calibration=calibration.get(wid),
                errors=errors.get(wid, {}),
            )
        )
    return out


def _histograms(
    cur: duckdb.DuckDBPyConnection, table: str, name: str, firsts: list[int], *, filled_only: bool
) -> dict[int, dict[str, Any]] | None:
    """Per window and name, the summed histograms of ``table``; None where pooling would raise.

    ``filled_only`` (inputs): bins must agree among the batches that counted something, and the
    bins are the first such batch's (the last batch's when none did); otherwise (scores) bins
    must agree among all batches and are the first batch's. Counts must have one length.
    ``firsts``: the first batch of each window, whose histograms tell how many bins to sum.
    """
    # each bin is one sum() of a list element: as many as the histograms have, no more
    found_bins = cur.execute(
        f"SELECT max(len(counts)) FROM {table} WHERE seq IN (SELECT unnest($seqs))",  # noqa: S608 (our SQL)
        {"seqs": firsts},
    ).fetchall()[0][0]
    bins, precise = max(int(found_bins or 0), 1), False
    while True:
        rows = _histogram_rows(cur, table, name, bins, filled_only=filled_only, precise=precise)
        longest = max((r[4] or 0 for r in rows), default=0)
        if longest > bins:
            bins = longest
        elif not precise and not all(r[3] and r[3] == r[4] and r[5] == r[6] and not r[7] for r in rows):
            precise = True  # empty histograms, or bins that differ: see which batches count
        else:
            break
    needed: set[int] = set()
    for r in rows:
        (_, _, full, shortest, longest, low, high, unknown, first_full, first, last) = r[:11]
        if (full and shortest != longest) or low != high or unknown:
            return None  # pooling these batches raises: let it
        needed.update(s for s in (first_full, first, last) if s is not None)
    extra_cols = "categories" if filled_only else "NULL"
    looked_up = {
        (seq, n): (edges, values, rowid)
        for seq, n, edges, values, rowid in cur.execute(
            f"SELECT seq, {name}, edges, {extra_cols}, rowid FROM {table} "  # noqa: S608 (our SQL)
            "WHERE seq IN (SELECT unnest($seqs))",
            {"seqs": sorted(needed)},
        ).fetchall()
    }
    found: dict[int, list[tuple[int, int, str, Any]]] = {}
    for r in rows:
        (wid, n, full, shortest, _, _, _, _, first_full, first, last, first_ord, missing, oor, sums) = r
        length = shortest if full else 0
        counts = [int(c) for c in sums[:length]]
        if filled_only:
            edges, values, _ = looked_up[first_full if full else last, n]
            item: FeatureTelemetry | Histogram = FeatureTelemetry(
                edges=edges, values=values, counts=counts, missing=int(missing), out_of_range=int(oor)
            )
        else:
            edges = looked_up[first, n][0]
            item = Histogram(edges=edges, counts=counts, missing=int(missing))
        # dict order of pooling: first appearance (batch order, then the order within that batch)
        found.setdefault(wid, []).append((first_ord, looked_up[first, n][2], n, item))
    return {wid: {n: item for _, _, n, item in sorted(items)} for wid, items in found.items()}


def _histogram_rows(
    cur: duckdb.DuckDBPyConnection, table: str, name: str, bins: int, *, filled_only: bool, precise: bool
) -> list[tuple[Any, ...]]:
    """Per window and name: wid, name, batches that counted, their shortest and longest counts, lowest
    and highest bins fingerprint and how many are missing (among the batches whose bins must
    agree), first batch that counted, first batch, last batch, first batch's place, missing sum,
    out-of-range sum, the counts summed over ``bins`` positions.

    Not ``precise``: every batch taken as one that counted (exact when all did, which the shortest
    counts tell); the FILTER clauses of the precise query double the time of the sums.
    """
    sums = ", ".join(f"sum(h.counts[{i}])" for i in range(1, bins + 1))
    out_of_range = "sum(h.out_of_range)" if filled_only else "0"
    if not precise:
        rows = cur.execute(
            f"SELECT p.wid, h.{name}, count(*), min(len(h.counts)), max(len(h.counts)), min(h.bins), "  # noqa: S608 (our SQL)
            f"max(h.bins), count(*) - count(h.bins), arg_min(h.seq, p.ord), min(p.ord), sum(h.missing), "
            f"{out_of_range}, list_value({sums}) FROM {table} h JOIN _pool p USING (seq) GROUP BY ALL"
        ).fetchall()
        return [(*r[:9], r[8], None, *r[9:]) for r in rows]
    filled = "h.n > 0"
    agree = filled if filled_only else "true"
    return cur.execute(
        f"SELECT p.wid, h.{name}, count(*) FILTER ({filled}), min(h.n) FILTER ({filled}), "  # noqa: S608 (our SQL)
        f"max(h.n) FILTER ({filled}), min(h.bins) FILTER ({agree}), max(h.bins) FILTER ({agree}), "
        f"count(*) FILTER ({agree} AND h.bins IS NULL), arg_min(h.seq, p.ord) FILTER ({filled}), "
        f"arg_min(h.seq, p.ord), arg_max(h.seq, p.ord), min(p.ord), sum(h.missing), {out_of_range}, "
        f"list_value({sums}) FROM (SELECT seq, {name}, len(counts) AS n, counts, bins, missing"
        f"{', out_of_range' if filled_only else ''} FROM {table}) h JOIN _pool p USING (seq) GROUP BY ALL"
    ).fetchall()


def _calibration(cur: duckdb.DuckDBPyConnection) -> dict[int, CalibratedSums]:
    """Per window, the calibrated sums of its batches, added in batch order as pooling does.

    Floating-point addition depends on the order, so these are not SQL sums: the values come
    out in batch order and each run of them is added up left to right (``np.cumsum``).
    """
    per_batch = cur.sql(
        "SELECT wid, calibrated_rows, expected_correct FROM _pool WHERE calibrated_rows IS NOT NULL "
        "ORDER BY wid, ord"
    ).to_arrow_table()
    per_label = cur.sql(
        "SELECT p.wid, l.label, l.calibrated_sum FROM batch_labels l JOIN _pool p USING (seq) "
        "WHERE l.calibrated_sum IS NOT NULL AND p.calibrated_rows IS NOT NULL ORDER BY p.wid, l.label, p.ord"
    ).to_arrow_table()
    sums: dict[int, dict[str, float]] = {}
    labels = per_label.column("label").combine_chunks().dictionary_encode()
    names = labels.dictionary.to_pylist()
    label_ids = labels.indices.to_numpy(zero_copy_only=False)
    label_wids = per_label.column("wid").to_numpy()
    values = per_label.column("calibrated_sum").to_numpy()
    for run in _runs(label_wids, label_ids):
        wid, label = int(label_wids[run.start]), names[label_ids[run.start]]
        sums.setdefault(wid, {})[label] = float(np.cumsum(values[run])[-1])
    out: dict[int, CalibratedSums] = {}
    wids = per_batch.column("wid").to_numpy()
    expected = per_batch.column("expected_correct").to_numpy()
    rows = per_batch.column("calibrated_rows").to_numpy()
    for run in _runs(wids):
        wid = int(wids[run.start])
        out[wid] = CalibratedSums(
            sums=sums.get(wid, {}),
            expected_correct=float(np.cumsum(expected[run])[-1]),
            rows=int(rows[run].sum()),
        )
    return out


def _runs(*keys: np.ndarray) -> list[slice]:
    """The runs of equal consecutive keys (arrays of the same length), as slices."""
    if not len(keys[0]):
        return []
    change = np.zeros(len(keys[0]) - 1, dtype=bool)
    for key in keys:
        change |= key[1:] != key[:-1]
    bounds = [0, *(np.flatnonzero(change) + 1).tolist(), len(keys[0])]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]
