"""``edgeml data erase``: a data subject's rows leave the lake, quarantine, validated parts and feature
tables; new snapshots replace the old; training data of the new snapshot loads; audited without the
value. ``edgeml data retain``: rows past the retention period leave the same places."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from edgeml.audit import AuditLog
from edgeml.cli import main
from edgeml.errors import UserError
from edgeml.ingest.lake import Part, list_snapshots, load_snapshot, read_parts
from edgeml.privacy.where import Where, parse_where
from edgeml.settings import Settings
from edgeml.spec import Spec
from edgeml.store import store_from_settings
from edgeml.store.base import ObjectStore
from edgeml.validate.run import load_validated
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict

ANA = "badge-ana"
STAGES = ("lake/", "quarantine/", "validated/", "features/")


def _spec(folder: Path, **extra: Any) -> Spec:
    data = faults_spec("erase-pumps")
    for e in data["expectations"]:  # quarantined, not fatal: the rejected rows are kept
        if e["kind"] in ("regex", "row_count"):
            e["severity"] = "warn"
    data.update(extra)
    return spec_from_dict(data, folder)


def _frame(days_back: int = 0, readings: int = 300) -> pd.DataFrame:
    frame = simulate_frame(machines=3, readings=readings)
    frame["operator"] = [f"badge-{n}" for n in ("ana", "bo", "cy", "di")] * (len(frame) // 4) + [
        "badge-bo"
    ] * (len(frame) % 4)
    frame.loc[frame.index[5:8], "machine_id"] = "not-a-pump"  # validation quarantines these (Ana's is #5)
    frame["temperature"] = frame["temperature"].astype(object)
    frame.loc[frame.index[[9, 12]], "temperature"] = "hot"  # ingestion rejects these (#12 is Ana's)
    if days_back:  # the newest reading an hour ago, the older half ``days_back`` days before
        frame["ts"] += pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1) - frame["ts"].max()
        frame.loc[frame.index[: len(frame) // 2], "ts"] -= pd.Timedelta(days=days_back)
    return frame.sort_values("ts", kind="stable").reset_index(drop=True)


def _tables(store: ObjectStore) -> dict[str, pd.DataFrame]:
    return {
        key: pq.read_table(io.BytesIO(store.get(key))).to_pandas()
        for prefix in STAGES
        for key in store.keys(prefix)
        if key.endswith(".parquet")
    }


def _holds(table: pd.DataFrame, value: str) -> int:
    if "operator" in table:
        return int((table["operator"] == value).sum())
    if "row" in table:
        return int(sum(json.loads(r).get("operator") == value for r in table["row"]))
    return 0


def _downstream(store: ObjectStore, spec: Spec, snapshot: str) -> int:
    """Rows of the snapshot's validated part and feature table, read as training reads them
    (sha256 checked): the same number in both."""
    _, validated = load_validated(store, spec, snapshot)
    doc = json.loads(store.get(f"catalog/{spec.name}/features/{snapshot}.json"))
    assert doc["snapshot"] == snapshot
    features = read_parts(store, [Part(**p) for p in doc["parts"]])
    assert features.num_rows == validated.num_rows == doc["rows"]
    return int(features.num_rows)


@pytest.fixture
def lake(clean_env: Path, settings: Settings, tmp_path: Path) -> tuple[Spec, str]:
    spec = _spec(tmp_path)
    return spec, make_snapshot(spec, settings, _frame())


def test_erase_takes_the_rows_out_of_every_stage_and_audits_without_the_value(
    lake: tuple[Spec, str], settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, old = lake
    store = store_from_settings(settings)
    before = _tables(store)
    assert all(sum(_holds(t, ANA) for k, t in before.items() if k.startswith(p)) for p in STAGES)
    lake_rows = sum(len(t) for k, t in before.items() if k.startswith("lake/"))
    ana_rows = sum(_holds(t, ANA) for k, t in before.items() if k.startswith("lake/"))

    code = main(
        [
            "data",
            "erase",
            str(tmp_path / "erase-pumps.yaml"),
            "--where",
            f"operator = '{ANA}'",
            "--reason",
            "DSR-7",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "validation reports: 0 failing examples erased" in out  # they hold machine ids here
    assert "MLflow: no tracking database in the appliance home" in out
    assert not (settings.home / "mlflow.db").exists()  # looking for one did not make one
    after = _tables(store)
    assert {k: _holds(t, ANA) for k, t in after.items() if _holds(t, ANA)} == {}
    assert sum(len(t) for k, t in after.items() if k.startswith("lake/")) == lake_rows - ana_rows
    # no one else's rows went with them
    for who in ("badge-bo", "badge-cy", "badge-di"):
        assert sum(_holds(t, who) for t in after.values()) == sum(_holds(t, who) for t in before.values())

    # a new snapshot replaced the old, and everything downstream follows it
    new = load_snapshot(store, spec.name)
    assert new.id != old
    assert [s.id for s in list_snapshots(store, spec.name)] == [new.id]
    assert f"snapshot {old} → {new.id}" in out
    assert new.rows == lake_rows - ana_rows
    report = json.loads(store.get(f"catalog/{spec.name}/validation/{new.id}.json"))
    assert report["rows"] == new.rows
    assert _downstream(store, spec, new.id) == report["rows_valid"] < new.rows  # the rest: quarantined

    # audited: who, why, how many, which snapshots; the value itself is nowhere in the catalog or log
    entry = next(e for e in AuditLog(store).entries() if e.action == "data.erase")
    assert entry.subject == spec.name
    assert entry.reason == "DSR-7"
    assert entry.after["value_sha256"] == Where("operator", ANA).value_sha256
    assert entry.after["snapshots"] == {old: new.id}
    assert entry.after["rows"]["lake"] == ana_rows
    for key in store.keys("catalog/") + store.keys("audit/"):
        assert ANA.encode() not in store.get(key), key
    assert AuditLog(store).verify() == []


def test_validation_reports_lose_the_failing_examples_that_hold_the_value(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    # badges are two letters: Ana's and Eve's fail, and the report shows a few as examples
    data["expectations"].append(
        {"kind": "regex", "column": "operator", "pattern": r"badge-[a-z]{2}", "severity": "warn"}
    )
    spec = spec_from_dict(data, tmp_path)
    frame = _frame()
    frame.loc[frame.index[[1, 2]], "operator"] = "badge-eve"
    make_snapshot(spec, settings, frame)
    store = store_from_settings(settings)

    def examples() -> list[str]:
        (key,) = store.keys(f"catalog/{spec.name}/validation/")
        report = json.loads(store.get(key))
        return next(o["examples"] for o in report["outcomes"] if o["column"] == "operator")

    before = examples()
    assert {ANA, "badge-eve"} <= set(before)
    assert main(["data", "erase", str(tmp_path / "erase-pumps.yaml"), "--where", f"operator = '{ANA}'"]) == 0
    assert f"validation reports: {before.count(ANA)} failing examples erased" in capsys.readouterr().out
    assert examples() == [e for e in before if e != ANA]
    for key in store.keys("catalog/"):
        assert ANA.encode() not in store.get(key), key


@pytest.mark.slow
@pytest.mark.parametrize("compliance", ["gdpr", "hipaa"])
def test_erase_rewrites_the_holdout_rows_mlflow_keeps_for_each_run(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str], compliance: str
) -> None:
    """The pii column is no model input, so a holdout row is Ana's when it equals one of her erased
    feature rows in every input; her rows carry an rpm no one else's does, to check that by. Under
    hipaa the rows are kept sealed: erasure opens them with the key and rewrites them sealed, and
    without the key it refuses before anything is erased."""
    import mlflow

    from edgeml.train.data import load_training_data
    from edgeml.train.run import keep_holdout
    from edgeml.train.tracking import experiment_id, tracking_uri

    spec = _spec(tmp_path, compliance=compliance)
    frame = _frame(readings=400)  # as training's own tests: every class in every split
    frame.loc[frame["operator"] == ANA, "rpm"] = 1234.5
    old = make_snapshot(spec, settings, frame)
    data = load_training_data(spec, settings, old)
    assert "operator" not in data.X_hold
    ana = int((data.X_hold["rpm"] == 1234.5).sum())
    assert 0 < ana < len(data.X_hold)
    client = mlflow.MlflowClient(tracking_uri(settings))
    mlflow.set_tracking_uri(tracking_uri(settings))
    runs = []
    for _ in range(2):  # as training logs them: the spec and the holdout rows with targets
        with mlflow.start_run(experiment_id=experiment_id(spec.name, settings)) as run:
            keep_holdout(spec, data, settings)
        runs.append(run.info.run_id)
    client.delete_run(runs[1])  # a deleted run keeps its artifacts until MLflow's gc
    kept = _holdout(client, runs[0], tmp_path / "before", settings)

    argv = ["data", "erase", str(tmp_path / "erase-pumps.yaml"), "--where", f"operator = '{ANA}'"]
    if compliance == "hipaa":  # the key gone: refused, naming it, before anything is erased
        store = store_from_settings(settings)
        objects = [k for k in store.keys("") if not k.startswith("audit/")]
        keys = {k: store.get(k) for k in objects}
        marker = settings.home / "mlartifacts.sealed.json"
        marker.rename(tmp_path / "marker")
        assert main([*argv, "--reason", "DSR-9"]) == 2
        err = capsys.readouterr().err
        assert "nothing was erased" in err, err
        assert "are sealed (compliance hipaa)" in err, err
        assert str(marker) in err
        assert [k for k in store.keys("") if not k.startswith("audit/")] == objects
        assert {k: store.get(k) for k in objects} == keys
        (tmp_path / "marker").rename(marker)
    assert main([*argv, "--reason", "DSR-9"]) == 0
    out = capsys.readouterr().out
    assert f"MLflow: {2 * ana} kept holdout rows erased in 2 runs" in out
    for n, run_id in enumerate(runs):
        assert f"run {run_id}: {ana} rows" in out
        after = _holdout(client, run_id, tmp_path / f"after-{n}", settings)
        assert (after["rpm"] != 1234.5).all()
        pd.testing.assert_frame_equal(after, kept[kept["rpm"] != 1234.5].reset_index(drop=True))
    # the live run records the erasure (never the value); the audit entry names both runs
    tags = {k: v for k, v in client.get_run(runs[0]).data.tags.items() if k.startswith("edgeml.erased.")}
    (record,) = (json.loads(v) for v in tags.values())
    assert record == {
        "column": "operator",
        "value_sha256": Where("operator", ANA).value_sha256,
        "rows": ana,
        "reason": "DSR-9",
    }
    entry = next(e for e in AuditLog(store_from_settings(settings)).entries() if e.action == "data.erase")
    assert entry.after["mlflow_holdouts"] == dict.fromkeys(runs, ana)
    # erasing again finds nothing more, anywhere
    assert main(argv) == 0
    assert "MLflow: 0 kept holdout rows erased in 0 runs" in capsys.readouterr().out


def test_an_mlflow_it_cannot_read_is_refused_before_anything_is_erased(
    lake: tuple[Spec, str],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The feature rows that find a run's holdout rows are gone once the lake is rewritten: MLflow
    must answer first."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store = store_from_settings(settings)
    keys = store.keys()
    spec_file = str(tmp_path / "erase-pumps.yaml")
    for uri in ("http://127.0.0.1:9", "nosuch://tracking"):
        argv = ["data", "erase", spec_file, "--where", f"operator = '{ANA}'", "--tracking-uri", uri]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"MLflow at {uri} cannot be read, so nothing was erased" in err
        assert "Traceback" not in err
        assert store.keys() == keys


@pytest.mark.slow
def test_input_examples_mlflow_keeps_are_no_ones_rows_and_erasure_replaces_old_ones(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training logs a synthesised input example; a model logged before it did (two of Ana's holdout
    rows as its example) gets both example files replaced by such a row when Ana is erased."""
    import mlflow

    from edgeml.train.data import load_training_data
    from edgeml.train.families import FAMILIES
    from edgeml.train.pipeline import build_pipeline
    from edgeml.train.run import keep_holdout, log_model
    from edgeml.train.tracking import experiment_id, tracking_uri, trusted_types

    spec = _spec(tmp_path)
    frame = _frame(readings=400)
    frame.loc[frame["operator"] == ANA, "rpm"] = 1234.5
    data = load_training_data(spec, settings, make_snapshot(spec, settings, frame))
    model = build_pipeline(spec, data.layout, FAMILIES["logistic"].build(spec.task, {"C": 1.0}, 0), {})
    model.fit(data.X_train, data.y_train)
    mlflow.set_tracking_uri(tracking_uri(settings))
    ana_rows = data.X_hold[data.X_hold["rpm"] == 1234.5].head(2)
    models = {}
    for how in ("training", "before"):
        with mlflow.start_run(experiment_id=experiment_id(spec.name, settings)):
            keep_holdout(spec, data, settings)
            if how == "training":
                info = log_model(spec, data, model)
            else:  # as training logged models before: the first holdout rows, Ana's here
                types = trusted_types(model)
                info = mlflow.sklearn.log_model(
                    model, name="model", input_example=ana_rows, skops_trusted_types=types
                )
        models[how] = info.model_id

    def examples(model_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        dest = str(tmp_path / model_id)
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=dest))
        plain = json.loads((folder / "input_example.json").read_text())
        serving = json.loads((folder / "serving_input_example.json").read_text())["dataframe_split"]
        return (
            pd.DataFrame(plain["data"], columns=plain["columns"]),
            pd.DataFrame(serving["data"], columns=serving["columns"]),
        )

    def no_ones_row(rows: pd.DataFrame) -> None:
        assert list(rows.columns) == list(data.X_hold.columns)
        assert len(rows) == 1
        for name in data.layout.numeric:  # drawn off every value the data holds
            seen = pd.concat([data.X_train[name], data.X_val[name], data.X_hold[name]])
            assert rows[name].iloc[0] not in set(seen.dropna()), name

    trained, _ = examples(models["training"])
    no_ones_row(trained)
    assert mlflow.pyfunc.load_model(f"models:/{models['training']}").predict(trained).shape == (1,)
    before, _ = examples(models["before"])
    assert (before["rpm"] == 1234.5).all()

    argv = ["data", "erase", str(tmp_path / "erase-pumps.yaml"), "--where", f"operator = '{ANA}'"]
    assert main([*argv, "--reason", "DSR-9"]) == 0
    out = capsys.readouterr().out
    assert "MLflow: input examples of 1 models replaced by a synthesised row" in out
    assert f"model {models['before']}: 2 rows" in out
    for rows in examples(models["before"]):
        no_ones_row(rows)
    assert mlflow.pyfunc.load_model(f"models:/{models['before']}").predict(rows).shape == (1,)
    pd.testing.assert_frame_equal(examples(models["training"])[0], trained)  # nobody's: left alone
    entry = next(e for e in AuditLog(store_from_settings(settings)).entries() if e.action == "data.erase")
    assert entry.after["mlflow_input_examples"] == {models["before"]: 2}


def _holdout(client: Any, run_id: str, dest: Path, settings: Settings) -> pd.DataFrame:
    """A run's kept holdout rows: in clear, or (hipaa) sealed, opened with the appliance's key only."""
    from edgeml.privacy.sealed_rows import is_sealed, kept_rows_key, read_rows

    dest.mkdir()
    path = Path(client.download_artifacts(run_id, "edgeml/holdout.parquet", str(dest)))
    sealed = client.get_run(run_id).data.tags.get("edgeml.kept_rows") == "sealed"
    assert is_sealed(path) == sealed
    if not sealed:
        return pd.read_parquet(path)
    assert b"PAR1" not in path.read_bytes()
    assert b"badge-" not in path.read_bytes()
    with pytest.raises(UserError, match="are sealed"):
        read_rows(path, run_id=run_id, artifact="edgeml/holdout.parquet", key=None)
    return read_rows(path, run_id=run_id, artifact="edgeml/holdout.parquet", key=kept_rows_key(settings))


def test_erasing_a_dataset_by_name_and_erasing_nothing(
    lake: tuple[Spec, str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, old = lake
    assert main(["data", "erase", spec.name, "--where", "operator = badge-nobody"]) == 0
    assert "erase-pumps: rows erased: none" in capsys.readouterr().out
    store = store_from_settings(settings)
    assert load_snapshot(store, spec.name).id == old  # nothing changed, nothing renamed
    assert store.keys(f"catalog/{spec.name}/rewrites/") == []
    assert (
        main(["data", "erase", spec.name, "--where", "temperature = 1e9"]) == 0
    )  # numbers compare as numbers


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("operator", "cannot read --where 'operator'"),
        ("operator = ", "cannot read --where 'operator = '"),
        ("operator = ana OR 1=1", "one column and one value only"),
        ("operator = 'it's'", "the value holds its own quote"),
        ("operator > 3", "cannot read --where 'operator > 3'"),
        ("badge = 7", "--where names column 'badge', which erase-pumps does not have"),
        ("temperature = hot", "--where temperature is a double column; 'hot' is not a number"),
    ],
)
def test_a_where_it_cannot_use_is_refused_before_anything_changes(
    lake: tuple[Spec, str],
    settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    where: str,
    message: str,
) -> None:
    store = store_from_settings(settings)
    keys = store.keys()
    assert main(["data", "erase", str(tmp_path / "erase-pumps.yaml"), "--where", where]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert store.keys() == keys


def test_an_unknown_dataset_is_refused(clean_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "erase", "no-such-data", "--where", "a = 1"]) == 2
    assert "dataset 'no-such-data' has nothing in the lake" in capsys.readouterr().err


def test_where_values() -> None:
    assert parse_where("email = 'a b@x.org'") == Where("email", "a b@x.org")
    assert parse_where('id="42"') == Where("id", "42")  # quoted: text
    assert parse_where("id = 42") == Where("id", 42)
    assert parse_where("t = -1.5e3") == Where("t", -1500.0)
    assert parse_where("badge = b-17") == Where("badge", "b-17")


# --- retention ----------------------------------------------------------------------------------


def test_retain_removes_rows_past_the_period_everywhere_and_is_idempotent(
    clean_env: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, retention_days=30)
    frame = _frame(days_back=100)
    make_snapshot(spec, settings, frame)
    store = store_from_settings(settings)
    AuditLog(store).append("cli:alice", "keys.init", "k1")
    audit = store.keys("audit/")
    cutoff = datetime.now(UTC) - timedelta(days=30)
    old_rows = int((frame["ts"] < cutoff).sum())

    assert main(["data", "retain", str(tmp_path / "erase-pumps.yaml")]) == 0
    # two of the old rows were rejected at ingestion: they leave the quarantine with validation's three
    assert f"rows older than 30 days removed: {old_rows - 2:,} lake, 5 quarantine" in capsys.readouterr().out
    for key, table in _tables(store).items():
        if "ts" in table:
            assert (pd.to_datetime(table["ts"], utc=True) >= cutoff).all(), key
    assert not [
        k
        for k in store.keys("lake/")
        if "date=" in k and k.split("date=")[1][:10] < cutoff.date().isoformat()
    ]
    snap = load_snapshot(store, spec.name)
    assert snap.rows == len(frame) - old_rows
    assert _downstream(store, spec, snap.id) <= snap.rows
    assert set(audit) <= set(store.keys("audit/"))  # the audit trail is never aged out with the data
    assert [e.action for e in AuditLog(store).entries()][-1] == "data.retain"

    records = store.keys(f"catalog/{spec.name}/rewrites/")
    assert main(["data", "retain", str(tmp_path / "erase-pumps.yaml"), "--days", "30"]) == 0
    assert "rows older than 30 days removed: none" in capsys.readouterr().out
    assert store.keys(f"catalog/{spec.name}/rewrites/") == records


def test_retain_needs_a_period(clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _spec(tmp_path)
    assert main(["data", "retain", str(tmp_path / "erase-pumps.yaml")]) == 2
    assert "sets no retention_days" in capsys.readouterr().err
