"""Erasure reaches the central node: ``POST /v1/erase`` deletes a data subject's logged predictions,
their labels and their rows in the telemetry batches' samples, audited without the value; ``edgeml
data erase --central`` carries it there, and erases the landed ``<model>.labels`` dataset in the lake
like any other dataset."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.cli import main
from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.store.local import LocalStore
from edgeml.telemetry.schema import LoggedPrediction, PredictionLogBatch, SampleRow, TelemetryBatch
from telemetry.batches import make_batch

from .conftest import ADMIN, Central, bearer

ANA = "badge-ana"
#: prediction id → (operator, temperature, label); Ana's are p1 and p3
ROWS = {
    "p1": (ANA, 91.5, "fault"),
    "p2": ("badge-bo", 40.0, "ok"),
    "p3": (ANA, 42.0, "ok"),
    "p4": ("badge-cy", 91.5, "fault"),
}


@pytest.fixture
def central(central_on_lake: Central) -> Central:
    return central_on_lake


def _sampled(device: str, model: str = "pump") -> TelemetryBatch:
    """A telemetry batch (compliance none) whose row sample holds every row of ROWS."""
    sample = [
        SampleRow(inputs={"operator": op, "temperature": t}, prediction=lb) for op, t, lb in ROWS.values()
    ]
    return make_batch(device, model=model).model_copy(update={"sample": sample})


def _samples(central: Central, model: str = "pump") -> list[tuple[str, float]]:
    return [
        (r.inputs["operator"], r.inputs["temperature"])
        for b in central.store.batches(model)
        for r in b.sample
    ]


def _fill(central: Central) -> None:
    """Logged predictions (as an agent ships them) and their labels, landed in the lake; a
    telemetry batch whose row sample holds the same rows."""
    token = central.register("dev-1")
    assert central.post(_sampled("dev-1"), token).status_code == 200
    rows = [
        LoggedPrediction(
            prediction_id=pid,
            model="pump",
            version=1,
            at=datetime.now(UTC),
            inputs={"operator": op, "temperature": t, "machine": "m1"},
            prediction="ok",
        )
        for pid, (op, t, _) in ROWS.items()
    ]
    batch = PredictionLogBatch(device_id="dev-1", batch_id="ab" * 16, predictions=rows)
    answer = central.client.post(
        "/v1/predictions",
        content=batch.model_dump_json(),
        headers={"Content-Type": "application/json"} | bearer(token),
    )
    assert answer.json()["stored"] == 4
    labels = [{"prediction_id": pid, "label": lb} for pid, (_, _, lb) in ROWS.items()]
    assert (
        central.client.post("/v1/feedback", json={"labels": labels}, headers=bearer(token)).json()["joined"]
        == 4
    )
    landed = central.client.post("/v1/feedback/land", json={"model": "pump"}, headers=bearer(ADMIN)).json()
    assert landed["rows"] == 4


def _stored(central: Central) -> tuple[set[str], set[str]]:
    predictions = {r[0] for r in central.store.fetch("SELECT prediction_id FROM predictions")}
    labels = {r[0] for r in central.store.fetch("SELECT prediction_id FROM feedback")}
    return predictions, labels


def test_cli_erases_the_labels_dataset_and_the_nodes_predictions_and_labels(
    central: Central,
    lake: Path,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _fill(central)
    monkeypatch.setenv("EDGEML_STORE_URL", f"file://{lake}")
    token_file = Path(central.config.admin_token_file)
    url = str(central.client.base_url)
    argv = ["data", "erase", "pump.labels", "--where", f"operator = '{ANA}'", "--reason", "ticket 7"]
    assert main([*argv, "--central", url, "--admin-token-file", str(token_file)]) == 0
    out = capsys.readouterr().out
    assert "pump.labels: rows erased: 2 lake" in out
    assert "2 logged predictions, 2 labels and 2 telemetry row samples erased" in out

    # the node keeps nothing of Ana's; the others' rows stay, still joined
    assert _stored(central) == ({"p2", "p4"}, {"p2", "p4"})
    assert _samples(central) == [("badge-bo", 40.0), ("badge-cy", 91.5)]
    assert {r.prediction_id for r in central.store.labelled_rows("pump")} == {"p2", "p4"}
    # the lake's labels dataset: a new snapshot without her rows (the landed dataset is an ordinary one)
    store = LocalStore(lake)
    snap = list_snapshots(store, "pump.labels")[-1]
    rows = read_parts(store, snap.parts).to_pylist()
    assert sorted(r["_prediction_id"] for r in rows) == ["p2", "p4"]
    assert ANA not in json.dumps([{k: str(v) for k, v in r.items()} for r in rows])
    # a later landing brings nothing back: her labels are gone from the node
    again = central.client.post("/v1/feedback/land", json={"model": "pump"}, headers=bearer(ADMIN)).json()
    assert again["rows"] == 0

    # both erasures are audited with the column and the value's hash, never the value
    entries = AuditLog(store).entries()
    node = [e for e in entries if e.action == "predictions.erase"]
    assert len(node) == 1
    assert {k: node[0].after[k] for k in ("column", "predictions", "labels", "samples")} == {
        "column": "operator",
        "predictions": 2,
        "labels": 2,
        "samples": 2,
    }
    assert node[0].reason == "ticket 7"
    assert [e.subject for e in entries if e.action == "data.erase"] == ["pump.labels"]
    assert ANA not in json.dumps([e.model_dump(mode="json") for e in entries])


def test_numbers_match_numbers_and_a_model_scope_holds(central: Central) -> None:
    _fill(central)
    answer = central.client.post(
        "/v1/erase", json={"where": "temperature = 91.5", "model": "other"}, headers=bearer(ADMIN)
    ).json()
    assert (answer["predictions"], answer["labels"], answer["column_logged"]) == (0, 0, False)
    answer = central.client.post(
        "/v1/erase", json={"where": "temperature = 91.5"}, headers=bearer(ADMIN)
    ).json()
    assert (answer["predictions"], answer["labels"], answer["audited"]) == (2, 2, True)
    assert _stored(central) == ({"p2", "p3"}, {"p2", "p3"})
    answer = central.client.post(
        "/v1/erase", json={"where": "email = 'x@y.org'"}, headers=bearer(ADMIN)
    ).json()
    assert (answer["predictions"], answer["column_logged"]) == (0, False)  # not logged: nothing to erase


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"where": "operator"}, 400, "cannot read --where 'operator'"),
        ({"where": "operator = ana OR 1=1"}, 400, "one column and one value only"),
        ({"where": "operator > 3"}, 400, "cannot read --where 'operator > 3'"),
        ({"where": ""}, 422, "where"),
        ({"where": "a = 1", "colour": "red"}, 422, "colour"),
    ],
)
def test_a_bad_erasure_is_refused_naming_the_problem_and_nothing_changes(
    central: Central, body: dict[str, str], status: int, message: str
) -> None:
    _fill(central)
    answer = central.client.post("/v1/erase", json=body, headers=bearer(ADMIN))
    assert answer.status_code == status
    assert message in answer.text
    assert _stored(central) == (set(ROWS), set(ROWS))
    assert len(_samples(central)) == len(ROWS)


def test_row_samples_lose_the_matching_rows_only_and_a_retried_batch_stays_out(central: Central) -> None:
    token = central.register("dev-2", model="press")
    press = _sampled("dev-2", model="press")
    assert central.post(press, token).status_code == 200
    _fill(central)
    answer = central.client.post(
        "/v1/erase", json={"where": "temperature = 91.5", "model": "pump"}, headers=bearer(ADMIN)
    ).json()
    assert answer["samples"] == 2  # numbers as numbers: Ana's 91.5 and Cy's
    assert _samples(central) == [("badge-bo", 40.0), (ANA, 42.0)]
    assert len(_samples(central, "press")) == len(ROWS)  # another model's batches: untouched
    batch = central.store.batches("pump")[0]
    assert (batch.rows, batch.features.keys()) == (10, {"a", "machine"})  # the rest of the batch holds
    # the device retrying the batch it sent is a repeat, not a way back in
    again = central.post(press, token)
    assert again.status_code == 200
    answer = central.client.post(
        "/v1/erase", json={"where": f"operator = '{ANA}'"}, headers=bearer(ADMIN)
    ).json()
    assert answer["samples"] == 3  # her last row in pump, both of hers in press
    assert central.post(press, token).status_code == 200
    assert ANA not in {op for model in ("pump", "press") for op, _ in _samples(central, model)}


def test_erasure_is_the_admins(central: Central) -> None:
    token = central.register("dev-1")
    for headers in ({}, bearer(token)):
        answer = central.client.post("/v1/erase", json={"where": "a = 1"}, headers=headers)
        assert answer.status_code == 401


def test_cli_central_options_are_checked_before_anything_is_erased(
    clean_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["data", "erase", "pump.labels", "--where", "a = 1"]
    assert main([*where, "--central", "http://127.0.0.1:9"]) == 2
    assert "--central needs --admin-token-file" in capsys.readouterr().err
    assert main([*where, "--admin-token-file", str(tmp_path / "t")]) == 2
    assert "--admin-token-file is for --central" in capsys.readouterr().err
    assert main([*where, "--central", "http://127.0.0.1:9", "--admin-token-file", str(tmp_path / "t")]) == 2
    assert "cannot read --admin-token-file" in capsys.readouterr().err
