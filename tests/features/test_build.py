"""Row features on a table, and the feature table of a validated snapshot, end to end."""

from __future__ import annotations

import io
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.features.build import FeatureReport, apply_row_features, build_features
from edgeml.ingest.lake import Part, Snapshot, read_parts, record_source_parts, take_snapshot
from edgeml.ingest.run import land_batch
from edgeml.settings import Settings
from edgeml.spec import Spec, parse_spec
from edgeml.spec.models import RowFeature
from edgeml.store import store_from_settings
from edgeml.validate import ValidationFailedError, validate

NAN = math.nan
TS = pa.timestamp("ms", tz="UTC")


def features(**exprs: str) -> list[RowFeature]:
    return [RowFeature(name=name, expr=expr) for name, expr in exprs.items()]


def small_table() -> pa.Table:
    return pa.table(
        {
            "ts": pa.array(
                [
                    datetime.fromisoformat(t)
                    for t in (
                        "2024-03-02T13:45:00+00:00",
                        "2024-03-04T00:10:00+00:00",
                        "2024-03-03T23:59:59+00:00",
                        "2024-12-31T06:00:00+00:00",
                    )
                ],
                TS,
            ),
            "temp": pa.array([-5.0, 0.0, 15.0, None], pa.float64()),
            "power": pa.array([0.0, 1.0, math.e - 1, 3.0], pa.float64()),
            "rpm": pa.array([1000, 1500, None, 3000], pa.int64()),
            "running": pa.array([True, False, True, None], pa.bool_()),
        }
    )


def values(table: pa.Table, name: str) -> list[float]:
    assert table.schema.field(name).type == pa.float64()
    return table[name].to_numpy(zero_copy_only=False).tolist()


def same(got: list[float], expected: list[float]) -> bool:
    return np.allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True)


# ------------------------------------------------------------------------------ row features


def test_arithmetic_on_float_int_and_bool_columns() -> None:
    table = apply_row_features(
        small_table(),
        features(
            a="temp * 2 + 1",
            b="power / rpm * 1000",
            c="rpm % 7 - -1",
            d="running * 10",
            e="2 ** temp",
        ),
    )
    assert same(values(table, "a"), [-9, 1, 31, NAN])  # missing in, missing out
    assert same(values(table, "b"), [0, 1 / 1.5, NAN, 1])
    assert same(values(table, "c"), [1000 % 7 + 1, 1500 % 7 + 1, NAN, 3000 % 7 + 1])
    assert same(values(table, "d"), [10, 0, 10, NAN])
    assert same(values(table, "e"), [2**-5, 1, 2**15, NAN])


def test_division_by_zero_and_log_of_zero_do_not_raise() -> None:
    table = apply_row_features(small_table(), features(q="1 / power", z="log(power)", n="0 / power"))
    assert values(table, "q")[0] == math.inf
    assert values(table, "z")[0] == -math.inf
    assert math.isnan(values(table, "n")[0])


def test_clip_and_log1p() -> None:
    table = apply_row_features(small_table(), features(c="clip(temp, 0, 10)", l="log1p(power)"))
    assert same(values(table, "c"), [0, 0, 10, NAN])
    assert same(values(table, "l"), [0, math.log(2), 1, math.log(4)])


def test_time_functions_read_utc_timestamps() -> None:
    table = apply_row_features(
        small_table(),
        features(
            h="hour(ts)",
            d="day_of_week(ts)",
            w="is_weekend(ts)",
            m="month(ts)",
        ),
    )
    # Saturday 13:45, Monday 00:10, Sunday 23:59:59, Tuesday 06:00
    assert values(table, "h") == [13, 0, 23, 6]
    assert values(table, "d") == [5, 0, 6, 1]
    assert values(table, "w") == [1, 0, 1, 0]
    assert values(table, "m") == [3, 3, 3, 12]


def test_bucketize_counts_the_edges_at_or_below() -> None:
    table = apply_row_features(
        small_table(), features(b="bucketize(temp, [-5, 10, 20])", r="bucketize(rpm / 1000, [1.5])")
    )
    assert values(table, "b")[:3] == [1, 1, 2]
    assert values(table, "r")[:2] == [0, 1]
    assert values(table, "r")[3] == 1


def test_a_feature_can_use_the_features_before_it() -> None:
    table = apply_row_features(
        small_table(),
        features(
            k="power * 2",
            k2="k + 1",
            k3="maximum(k2, temp) - minimum(k, 1)",
        ),
    )
    assert same(values(table, "k"), [0, 2, 2 * (math.e - 1), 6])
    assert same(values(table, "k2"), [1, 3, 2 * (math.e - 1) + 1, 7])
    assert same(values(table, "k3"), [1 - 0, 3 - 1, 15 - 1, NAN])
    assert table.column_names == ["ts", "temp", "power", "rpm", "running", "k", "k2", "k3"]


def test_a_constant_feature_fills_every_row() -> None:
    table = apply_row_features(small_table(), features(one="1 + 2"))
    assert values(table, "one") == [3, 3, 3, 3]


def test_no_row_features_leaves_the_table_alone() -> None:
    table = small_table()
    assert apply_row_features(table, []) is table


# ------------------------------------------------------------------------- end to end

SPEC = """\
version: 1
name: pumps
sources:
  - {name: history, kind: file, path: history.csv}
schema:
  timestamp: ts
  entity: machine
  columns:
    ts: {type: timestamp, nullable: false}
    machine: {type: string, nullable: false}
    temp: {type: float}
    power: {type: float}
expectations:
  - {kind: between, column: temp, max: 100, severity: warn}
features:
  row:
    - {name: log_power, expr: "log1p(power)"}
    - {name: hot, expr: "bucketize(temp, [25])"}
    - {name: hot_hour, expr: "hot * hour(ts)"}
  window:
    - {name: temp_mean_3, column: temp, agg: mean, size: 3}
    - {name: temp_max_2m, column: temp, agg: max, span: 2m}
    - {name: power_prev, column: power, agg: lag, lag: 1}
target: power
task: regression
search: {families: [linear]}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    path = tmp_path / "pumps.yaml"
    path.write_text(SPEC, encoding="utf-8")
    return parse_spec(SPEC, source=str(path), base_dir=tmp_path)


def ingest(spec: Spec, settings: Settings, frame: pd.DataFrame) -> Snapshot:
    """Land ``frame`` as source history (``land_batch`` runs without Ray) and snapshot the lake."""
    meta = land_batch(
        frame,
        schema=spec.schema_,
        dataset=spec.name,
        source="history",
        timestamp=spec.schema_.timestamp,
        store_url=settings.store_url,
        s3=settings.store.s3,
    )
    parts = [
        Part(str(r.key), str(r.sha256), int(r.rows), int(r.bytes), "history", str(r.date))
        for r in meta.itertuples(index=False)
        if r.kind == "clean"
    ]
    store = store_from_settings(settings)
    record_source_parts(store, spec.name, "history", parts, append=False)
    return take_snapshot(store, spec)


def readings() -> pd.DataFrame:
    """Two machines, one reading a minute, interleaved; m2's fourth reading is out of range."""
    rows = []
    for i in range(5):
        rows.append(
            {"ts": f"2024-03-01T10:0{i}:00Z", "machine": "m1", "temp": 20.0 + 2 * i, "power": 1.0 * i}
        )
        rows.append({"ts": f"2024-03-01T10:0{i}:00Z", "machine": "m2", "temp": 30.0 - i, "power": 10.0 + i})
    frame = pd.DataFrame(rows)
    frame.loc[7, "temp"] = 500.0  # m2 at 10:03 is quarantined by the warn expectation
    return frame


def test_build_features_after_validate(spec: Spec, settings: Settings) -> None:
    snap = ingest(spec, settings, readings())
    validation = validate(spec, settings)
    assert validation.rows_valid == 9
    report = build_features(spec, settings)
    assert isinstance(report, FeatureReport)
    assert (report.dataset, report.snapshot, report.rows) == ("pumps", snap.id, 9)
    (part,) = report.parts  # one validated part in, one feature part out
    assert part.key.startswith(f"features/pumps/{snap.id}/part-")
    assert part.rows == 9

    store = store_from_settings(settings)
    table = pq.read_table(io.BytesIO(store.get(part.key)))
    assert table.column_names == [
        "ts",
        "machine",
        "temp",
        "power",
        "temp_mean_3",
        "temp_max_2m",
        "power_prev",
        "log_power",
        "hot",
        "hot_hour",
    ]
    frame = table.to_pandas()
    m1 = frame[frame["machine"] == "m1"].reset_index(drop=True)
    m2 = frame[frame["machine"] == "m2"].reset_index(drop=True)
    assert m1["temp"].tolist() == [20, 22, 24, 26, 28]
    assert m1["temp_mean_3"].tolist() == [20, 21, 22, 24, 26]
    assert m1["temp_max_2m"].tolist() == [20, 22, 24, 26, 28]
    assert same(m1["power_prev"].tolist(), [NAN, 0, 1, 2, 3])
    assert same(m1["log_power"].tolist(), [math.log1p(p) for p in range(5)])
    assert m1["hot"].tolist() == [0, 0, 0, 1, 1]
    assert m1["hot_hour"].tolist() == [0, 0, 0, 10, 10]
    # m2 lost its 10:03 reading to quarantine: windows run over the validated rows only
    assert m2["temp"].tolist() == [30, 29, 28, 26]
    assert m2["temp_mean_3"].tolist() == [30, 29.5, 29, pytest.approx(83 / 3)]
    assert m2["temp_max_2m"].tolist() == [30, 30, 30, 28]  # 10:04 reaches back to 10:02 inclusive
    assert same(m2["power_prev"].tolist(), [NAN, 10, 11, 12])

    doc = json.loads(store.get(f"catalog/pumps/features/{snap.id}.json"))
    names = ["temp_mean_3", "temp_max_2m", "power_prev", "log_power", "hot", "hot_hour"]
    assert doc["dataset"] == "pumps"
    assert doc["snapshot"] == snap.id
    assert doc["rows"] == 9
    assert doc["features"] == names
    assert [p["key"] for p in doc["parts"]] == [part.key]
    assert set(doc["stats"]) == set(names) == set(report.stats)
    prev = frame["power_prev"].to_numpy()
    present = prev[~np.isnan(prev)]
    assert report.stats["power_prev"] == {
        "missing": pytest.approx(2 / 9),
        "mean": pytest.approx(present.mean()),
        "std": pytest.approx(present.std()),
        "min": 0.0,
        "max": 12.0,
    }
    assert report.stats["hot"]["mean"] == pytest.approx(frame["hot"].mean())
    assert doc["stats"]["power_prev"] == pytest.approx(report.stats["power_prev"])


def test_feature_catalog_is_strict_json_when_a_feature_is_all_missing(
    tmp_path: Path, settings: Settings
) -> None:
    text = SPEC.replace("agg: lag, lag: 1", "agg: lag, lag: 50")  # never 50 readings back
    spec = parse_spec(text, base_dir=tmp_path)
    snap = ingest(spec, settings, readings())
    validate(spec, settings)
    report = build_features(spec, settings)
    assert report.stats["power_prev"]["missing"] == 1.0
    assert math.isnan(report.stats["power_prev"]["mean"])

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    raw = store_from_settings(settings).get(f"catalog/pumps/features/{snap.id}.json")
    doc = json.loads(raw, parse_constant=refuse)
    assert doc["stats"]["power_prev"] == {"missing": 1.0, "mean": None, "std": None, "min": None, "max": None}


def test_build_features_refuses_an_unvalidated_or_failed_snapshot(tmp_path: Path, settings: Settings) -> None:
    spec = parse_spec(SPEC.replace("severity: warn", "severity: error"), base_dir=tmp_path)
    snap = ingest(spec, settings, readings())
    with pytest.raises(UserError, match="has not been validated"):
        build_features(spec, settings)
    with pytest.raises(ValidationFailedError):
        validate(spec, settings)
    with pytest.raises(UserError, match="failed validation"):
        build_features(spec, settings, snap.id)
    assert store_from_settings(settings).keys(f"features/pumps/{snap.id}/") == []


# ------------------------------------------------------------------------------------ CLI


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_features(
    spec: Spec, settings: Settings, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = ingest(spec, settings, readings())
    path = str(tmp_path / "pumps.yaml")
    code, _, err = cli(capsys, "validate", path)
    assert code == 0, err
    code, out, err = cli(capsys, "features", path)
    assert code == 0, err
    assert f"features of pumps snapshot {snap.id} (9 rows)" in out
    for name in ("temp_mean_3", "temp_max_2m", "power_prev", "log_power", "hot", "hot_hour"):
        assert name in out
    assert f"feature table: 1 part(s) under features/pumps/{snap.id}/" in out
    assert store_from_settings(settings).exists(f"catalog/pumps/features/{snap.id}.json")


def test_cli_features_on_an_unvalidated_snapshot(
    spec: Spec, settings: Settings, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = ingest(spec, settings, readings())
    code, _, err = cli(capsys, "features", str(tmp_path / "pumps.yaml"))
    assert code == 2
    assert f"snapshot {snap.id} of pumps has not been validated" in err
    assert f"hint: run `edgeml validate SPEC --snapshot {snap.id}` first" in err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("chunk_rows", [262_144, 40], ids=["bucket-whole", "by-key-range"])
def test_windows_are_exact_across_part_boundaries(spec: Spec, settings: Settings, chunk_rows: int) -> None:
    from edgeml.features.window import compute_batch
    from edgeml.ingest.lake import read_parts
    from edgeml.validate.run import validated_parts

    rng = np.random.default_rng(7)
    stamps = pd.date_range("2024-03-01T20:00:00Z", periods=60, freq="50min")  # crosses two midnights
    frame = pd.DataFrame(
        [
            {"ts": t.isoformat(), "machine": f"m{k}", "temp": float(rng.integers(0, 60)), "power": float(i)}
            for i, t in enumerate(stamps)
            for k in range(5)
        ]
    )
    snap = ingest(spec, settings, frame)
    assert len(snap.parts) == 3  # one part per event date
    validate(spec, settings)
    report = build_features(spec, settings, chunk_rows=chunk_rows)  # a bucket holds 100 to 200 rows
    assert report.rows == len(frame)
    assert len(report.parts) > 1  # bucketed by machine: output in parts

    store = store_from_settings(settings)
    got = read_parts(store, report.parts).to_pandas()
    _, parts = validated_parts(store, spec)
    whole = compute_batch(
        read_parts(store, parts, spec.schema_), spec.features.window, entity="machine", timestamp="ts"
    )
    expected = apply_row_features(whole, spec.features.row).to_pandas()
    order = ["machine", "ts"]
    got = got.sort_values(order, ignore_index=True)
    expected = expected.sort_values(order, ignore_index=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    per_machine = got[got["machine"] == "m3"]
    assert per_machine["power_prev"].iloc[1:].tolist() == per_machine["power"].iloc[:-1].tolist()
    assert report.stats["temp_mean_3"]["mean"] == pytest.approx(got["temp_mean_3"].mean())
    assert report.stats["temp_mean_3"]["std"] == pytest.approx(got["temp_mean_3"].std(ddof=0))
    assert not store.keys(f"features/pumps/{snap.id}/shuffle/")


def test_a_task_writes_its_rows_in_parts_of_bounded_size(spec: Spec, settings: Settings) -> None:
    """A bucket of long-lived entities would make one part as large as its share of the data.

    The bound is an argument, not a patched constant: the tasks may run in Ray workers (when an
    earlier test left a Ray running), which would not see a patch."""
    ingest(spec, settings, readings())
    validate(spec, settings)
    whole = build_features(spec, settings)
    store = store_from_settings(settings)
    store.delete(f"catalog/pumps/features/{whole.snapshot}.json")
    split = build_features(spec, settings, part_rows=4)
    assert [p.rows for p in split.parts] == [4, 4, 1]
    assert read_parts(store, split.parts).to_pandas().equals(read_parts(store, whole.parts).to_pandas())
    assert split.stats == whole.stats
