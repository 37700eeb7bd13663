"""validate() on real snapshots: the report, quarantine, the validated dataset, severities, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.settings import Settings
from edgeml.validate import ValidationFailedError, ValidationReport, validate
from edgeml.validate.run import load_validated


def readings(
    n: int = 6,
    machines: tuple[str, ...] = ("m1", "m2"),
    start: str = "2024-03-01T00:00:00Z",
    step_s: int = 60,
) -> pd.DataFrame:
    """``n`` valid readings per machine, interleaved, one every ``step_s`` seconds."""
    rows = []
    t0 = pd.Timestamp(start)
    for i in range(n):
        for k, machine in enumerate(machines):
            rows.append(
                {
                    "ts": (t0 + pd.Timedelta(seconds=i * step_s)).isoformat(),
                    "machine": machine,
                    "temp": 20.0 + i + k,
                    "code": f"C{i}",
                    "power": 1.0 + 0.5 * i,
                }
            )
    return pd.DataFrame(rows)


def report_doc(lake: Any, snapshot: str) -> dict[str, Any]:
    return json.loads(lake.store.get(f"catalog/pumps/validation/{snapshot}.json"))


def quarantined(lake: Any, snapshot: str) -> pd.DataFrame:
    keys = lake.store.keys(f"quarantine/pumps/validation/{snapshot}/")
    tables = [pq.read_table(io.BytesIO(lake.store.get(k))).to_pandas() for k in keys]
    return (
        pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["source", "reason", "row"])
    )


EXPECTATIONS = """\
  - {kind: row_count, min: 10}
  - {kind: not_null, column: power}
  - {kind: between, column: temp, min: -20, max: 150, name: temp_range, severity: warn}
  - {kind: regex, column: code, pattern: "C[0-9]+", severity: warn}
  - {kind: monotonic_timestamp, strict: true}
  - {kind: max_missing_fraction, column: power, max: 0.5}
"""


def test_clean_data_passes_and_everything_is_recorded(make_spec: Any, lake: Any, settings: Settings) -> None:
    spec = make_spec(EXPECTATIONS)
    snap = lake.ingest(spec, readings())
    report = validate(spec, settings)
    assert isinstance(report, ValidationReport)
    assert report.passed
    assert (report.dataset, report.snapshot, report.rows, report.rows_valid) == ("pumps", snap.id, 12, 12)
    assert report.errors == []
    assert report.warnings == []
    assert report.quarantine == []
    doc = report_doc(lake, snap.id)
    assert doc["passed"] is True
    assert doc["rows"] == doc["rows_valid"] == 12
    assert [o["name"] for o in doc["outcomes"]] == [
        "row_count",
        "not_null(power)",
        "temp_range",
        "regex(code)",
        "monotonic_timestamp",
        "max_missing_fraction(power)",
    ]
    assert all(o["passed"] for o in doc["outcomes"])
    assert lake.store.keys(f"quarantine/pumps/validation/{snap.id}/") == []
    (part,) = doc["validated"]
    assert part["key"].startswith(f"validated/pumps/{snap.id}/part-")
    assert part["rows"] == 12
    loaded_snap, table = load_validated(lake.store, spec)
    assert loaded_snap.id == snap.id
    assert table.num_rows == 12
    assert table.column_names == ["ts", "machine", "temp", "code", "power"]


def test_warn_quarantines_failing_rows_and_goes_on(make_spec: Any, lake: Any, settings: Settings) -> None:
    spec = make_spec(EXPECTATIONS)
    data = readings()
    data.loc[3, "temp"] = 400.0  # m2, 2nd reading: too hot
    data.loc[6, "code"] = "bad"  # m1, 4th reading: bad code
    data.loc[8, ["temp", "code"]] = [-90.0, "X"]  # m1, 5th reading: both
    snap = lake.ingest(spec, data)
    report = validate(spec, settings)
    assert report.passed
    assert report.rows == 12
    assert report.rows_valid == 9
    assert [o.name for o in report.warnings] == ["temp_range", "regex(code)"]
    assert [(o.failing, o.detail) for o in report.warnings] == [
        (2, "2 outside [-20.0, 150.0]"),
        (2, "2 do not match 'C[0-9]+'"),
    ]

    doc = report_doc(lake, snap.id)
    assert doc["passed"] is True
    assert doc["rows_valid"] == 9
    by_name = {o["name"]: o for o in doc["outcomes"]}
    assert len(by_name) == 6
    assert by_name["temp_range"] == {
        "name": "temp_range",
        "kind": "between",
        "column": "temp",
        "severity": "warn",
        "passed": False,
        "failing": 2,
        "detail": "2 outside [-20.0, 150.0]",
        "examples": ["400.0", "-90.0"],
    }
    assert by_name["regex(code)"]["examples"] == ["bad", "X"]
    assert by_name["not_null(power)"]["passed"] is True

    bad = quarantined(lake, snap.id)
    assert len(bad) == 3
    assert set(bad["source"]) == {"validation"}
    rows = [json.loads(r) for r in bad["row"]]
    reasons = {
        (r["machine"], r["temp"], r["code"]): reason for r, reason in zip(rows, bad["reason"], strict=True)
    }
    assert reasons == {
        ("m2", 400.0, "C1"): "temp_range",
        ("m1", 20.0 + 3, "bad"): "regex(code)",
        ("m1", -90.0, "X"): "temp_range; regex(code)",
    }
    assert doc["quarantine"][0]["key"].startswith(f"quarantine/pumps/validation/{snap.id}/part-")

    _, table = load_validated(lake.store, spec, snap.id)
    frame = table.to_pandas()
    assert len(frame) == 9
    assert not frame["temp"].isin([400.0, -90.0]).any()
    assert not frame["code"].isin(["bad", "X"]).any()
    kept = data.drop(index=[3, 6, 8])
    assert list(frame["code"]) == list(kept["code"])  # in order
    assert list(frame["temp"]) == list(kept["temp"])


ERROR_EXPECTATIONS = """\
  - {kind: not_null, column: temp, severity: warn}
  - {kind: between, column: power, min: 0, max: 10}
  - {kind: row_count, max: 100}
"""


def test_error_stops_with_a_clear_message_after_writing_everything(
    make_spec: Any, lake: Any, settings: Settings
) -> None:
    spec = make_spec(ERROR_EXPECTATIONS)
    data = readings()
    data.loc[1, "power"] = -3.5
    data.loc[5, "power"] = 12.25
    data.loc[7, "temp"] = None
    snap = lake.ingest(spec, data)
    with pytest.raises(ValidationFailedError) as info:
        validate(spec, settings)
    exc = info.value
    assert isinstance(exc, UserError)
    assert exc.exit_code == 2
    message = exc.message
    assert f"validation of pumps snapshot {snap.id} failed" in message
    assert "between(power) on column power: 2 outside [0.0, 10.0]; e.g. -3.5, 12.25" in message
    assert "not_null" not in message  # a warning is not why it failed
    assert "row_count" not in message
    assert exc.hint is not None
    assert f"catalog/pumps/validation/{snap.id}.json" in exc.hint
    report = exc.report
    assert not report.passed
    assert [o.name for o in report.errors] == ["between(power)"]
    assert [o.name for o in report.warnings] == ["not_null(temp)"]

    doc = report_doc(lake, snap.id)  # written although validation failed
    assert doc["passed"] is False
    assert doc["rows"] == 12
    assert doc["rows_valid"] == 9
    assert [o["passed"] for o in doc["outcomes"]] == [False, False, True]
    bad = quarantined(lake, snap.id)  # and so is the quarantine
    assert sorted(bad["reason"]) == ["between(power)", "between(power)", "not_null(temp)"]
    assert sorted(json.loads(r)["power"] for r in bad["row"]) == [-3.5, 2.0 + 0.5, 12.25]

    with pytest.raises(UserError, match="failed validation"):
        load_validated(lake.store, spec)


def test_error_message_names_a_timestamp_column_and_examples(
    make_spec: Any, lake: Any, settings: Settings
) -> None:
    spec = make_spec("  - {kind: monotonic_timestamp, strict: true}\n")
    data = readings(n=3, machines=("m1",))
    data.loc[2, "ts"] = data.loc[0, "ts"]
    lake.ingest(spec, data)
    with pytest.raises(ValidationFailedError) as info:
        validate(spec, settings)
    assert (
        "monotonic_timestamp on column ts: 1 rows not after the previous reading; "
        "e.g. 2024-03-01 00:00:00+00:00"
    ) in info.value.message


def test_unvalidated_snapshot_is_refused(make_spec: Any, lake: Any, settings: Settings) -> None:
    spec = make_spec("  - {kind: not_null, column: power}\n")
    first = lake.ingest(spec, readings(n=2))
    validate(spec, settings)
    load_validated(lake.store, spec, first.id)
    second = lake.ingest(spec, readings(n=3))  # a new snapshot, not validated yet
    assert second.id != first.id
    with pytest.raises(UserError, match=f"snapshot {second.id} of pumps has not been validated") as info:
        load_validated(lake.store, spec, second.id)
    assert info.value.hint is not None
    assert "edgeml validate" in info.value.hint
    _, table = load_validated(lake.store, spec, first.id[:8])  # the old one still is
    assert table.num_rows == 4


def test_validate_a_chosen_snapshot(make_spec: Any, lake: Any, settings: Settings) -> None:
    spec = make_spec("  - {kind: row_count, max: 4}\n")
    first = lake.ingest(spec, readings(n=2))
    second = lake.ingest(spec, readings(n=3))
    with pytest.raises(ValidationFailedError):
        validate(spec, settings, second.id)  # 6 rows
    report = validate(spec, settings, first.id[:6])
    assert report.snapshot == first.id
    assert report.passed


def test_monotonic_order_is_checked_within_each_part_only(
    make_spec: Any, lake: Any, settings: Settings
) -> None:
    """Stream micro-batches land as parts in any order; going back in time inside one is an error."""
    spec = make_spec("  - {kind: monotonic_timestamp, strict: true}\n")
    late = readings(n=3, start="2024-03-01T10:00:00Z")
    early = readings(n=3, start="2024-03-01T08:00:00Z")
    lake.land(spec, late, "live")
    lake.land(spec, early, "live", append=True)
    snap = lake.snapshot(spec)
    assert len(snap.parts) == 2
    assert validate(spec, settings, snap.id).passed

    backwards = readings(n=3, start="2024-03-01T12:00:00Z")
    backwards.loc[4, "ts"] = "2024-03-01T11:00:00Z"  # m1's third reading goes back
    lake.land(spec, backwards, "live", append=True)
    snap = lake.snapshot(spec)
    assert len(snap.parts) == 3
    with pytest.raises(ValidationFailedError, match="1 rows not after the previous reading") as info:
        validate(spec, settings, snap.id)
    assert info.value.report.rows == 18
    assert info.value.report.rows_valid == 17
    (row,) = [json.loads(r) for r in quarantined(lake, snap.id)["row"]]
    assert (row["machine"], row["ts"]) == ("m1", "2024-03-01 11:00:00+00:00")


def test_validating_twice_gives_the_same_parts(make_spec: Any, lake: Any, settings: Settings) -> None:
    spec = make_spec("  - {kind: between, column: temp, max: 22, severity: warn}\n")
    lake.ingest(spec, readings(n=3))
    first, second = validate(spec, settings), validate(spec, settings)
    assert first.validated == second.validated
    assert first.quarantine == second.quarantine
    assert first.rows_valid == 5


# ------------------------------------------------------------------------------------ CLI


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_validate_prints_a_table(
    make_spec: Any, lake: Any, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = make_spec(
        "  - {kind: not_null, column: power}\n  - {kind: between, column: temp, max: 22, "
        "severity: warn, name: cool}\n"
    )
    snap = lake.ingest(spec, readings(n=3))
    code, out, err = cli(capsys, "validate", str(tmp_path / "pumps.yaml"))
    assert code == 0, err
    assert f"validation of pumps snapshot {snap.id}" in out
    assert "not_null(power)" in out
    assert "pass" in out
    assert "cool" in out
    assert "warn" in out
    assert "5 of 6 rows valid; 1 quarantined" in out
    assert lake.store.exists(f"catalog/pumps/validation/{snap.id}.json")


def test_cli_validate_exits_2_on_an_error_expectation(
    make_spec: Any, lake: Any, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = make_spec("  - {kind: between, column: power, max: 1.5}\n")
    data = readings(n=4)
    snap = lake.ingest(spec, data)
    code, out, err = cli(capsys, "validate", str(tmp_path / "pumps.yaml"))
    assert code == 2
    assert "FAIL" in out  # the table is printed before the error
    assert "error:" in err
    assert "between(power) on column power: 4 outside [None, 1.5]; e.g. 2.0, 2.0, 2.5" in err
    assert f"catalog/pumps/validation/{snap.id}.json" in err
    assert "Traceback" not in err + out
    assert "internal error" not in err
    assert lake.store.exists(f"catalog/pumps/validation/{snap.id}.json")


def test_cli_validate_without_a_snapshot(
    make_spec: Any, clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_spec("  - {kind: row_count, min: 1}\n")
    code, _, err = cli(capsys, "validate", str(tmp_path / "pumps.yaml"))
    assert code == 2
    assert "dataset 'pumps' has no snapshot yet" in err
    assert "edgeml ingest" in err
    assert "Traceback" not in err


def test_validation_streams_over_parts_and_finds_duplicates_across_them(
    make_spec: Any, lake: Any, settings: Settings
) -> None:
    spec = make_spec(
        "  - {kind: unique, columns: [machine, ts], severity: warn}\n"
        "  - {kind: between, column: temp, max: 100, severity: warn}\n"
        "  - {kind: row_count, min: 20}\n"
    )
    history = readings(n=6)
    live = readings(n=8)  # its first six readings per machine repeat history's
    live.loc[15, "temp"] = 500.0  # a new reading, too hot
    lake.land(spec, history, "history")
    lake.land(spec, live, "live")
    snap = lake.snapshot(spec)
    assert len(snap.parts) == 2
    report = validate(spec, settings)
    assert report.rows == 28
    unique, between, count = report.outcomes
    assert (unique.failing, unique.detail) == (12, "12 duplicate rows")
    assert (between.failing, between.detail) == (1, "1 outside [None, 100.0]")
    assert count.passed
    assert count.detail == "28 rows, expected 20..∞"
    assert report.rows_valid == 28 - 12 - 1
    # output in parts, one per lake part; of each duplicate pair the first in lake order is kept
    assert len(report.validated) == 2
    assert sum(p.rows for p in report.validated) == report.rows_valid
    from edgeml.validate.run import load_validated

    _, table = load_validated(lake.store, spec)
    assert table.num_rows == 15
    assert len(quarantined(lake, snap.id)) == 13


@pytest.mark.parametrize("bucket_keys", [7, 4_000_000], ids=["many hash ranges", "one hash range"])
def test_duplicates_over_hash_ranges_are_the_repeats_in_lake_order(
    make_spec: Any, lake: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch, bucket_keys: int
) -> None:
    """Keys hashed into ranges (7 keys a range: about 17 ranges here) find the same repeats as
    pandas over the whole snapshot, keep the first in lake order, and leave no scratch behind."""
    import numpy as np

    from edgeml.ingest.lake import read_parts
    from edgeml.validate import run

    monkeypatch.setattr(run, "_BUCKET_KEYS", bucket_keys)
    spec = make_spec(
        "  - {kind: unique, columns: [machine, ts], severity: warn}\n"
        "  - {kind: unique, columns: [code], severity: warn}\n"
    )
    rng = np.random.default_rng(11)
    for k, name in enumerate(("history", "live")):
        n = int(rng.integers(40, 80))
        frame = pd.DataFrame(
            {  # four days: a part per source and day
                "ts": [
                    f"2024-03-0{d}T00:{m:02d}:00Z"
                    for d, m in zip(rng.integers(1, 5, n), rng.integers(0, 9, n), strict=True)
                ],
                "machine": rng.choice(["m1", "m2", "m3"], n),
                "temp": np.arange(n) + 1000.0 * k,  # the row's identity
                "code": [f"C{c}" for c in rng.integers(0, 90, n)],
                "power": 1.0,
            }
        )
        lake.land(spec, frame, name)
    snap = lake.snapshot(spec)
    assert len(snap.parts) == 8
    whole = read_parts(lake.store, list(snap.parts), spec.schema_).to_pandas()  # in lake order
    first_by_ts = ~whole.duplicated(["machine", "ts"], keep="first")
    first_by_code = ~whole.duplicated(["code"], keep="first")

    report = validate(spec, settings)
    by_ts, by_code = report.outcomes
    assert by_ts.failing == int((~first_by_ts).sum()) > 0
    assert by_code.failing == int((~first_by_code).sum()) > 0
    _, table = load_validated(lake.store, spec)
    assert sorted(table.column("temp").to_pylist()) == sorted(whole.loc[first_by_ts & first_by_code, "temp"])
    assert lake.store.keys(f"catalog/pumps/validation/{snap.id}.keys/") == []
