"""Labels joined to the devices' logged predictions: idempotent, late, unknown; landed in the lake."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.classifier import faults_classifier
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.predlog import PredictionLog, PredictionShipper
from edgeml.agent.server import Serving, create_app
from edgeml.ingest.lake import list_snapshots, read_parts
from edgeml.store.local import LocalStore
from edgeml.telemetry.schema import LoggedPrediction, PredictionLogBatch

from .conftest import ADMIN, Central, bearer

JSON = {"Content-Type": "application/json"}


def logged(pid: str, temperature: float, predicted: str, version: int = 1) -> LoggedPrediction:
    return LoggedPrediction(
        prediction_id=pid,
        model="pump",
        version=version,
        at=datetime.now(UTC),
        inputs={"temperature": temperature, "machine": "m1"},
        prediction=predicted,
    )


def ship(central: Central, token: str, *rows: LoggedPrediction, device: str = "dev-1") -> dict[str, int]:
    batch = PredictionLogBatch(device_id=device, batch_id="ab" * 16, predictions=list(rows))
    answer = central.client.post(
        "/v1/predictions", content=batch.model_dump_json(), headers=JSON | bearer(token)
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, int] = answer.json()
    return result


def label(central: Central, token: str, *pairs: tuple[str, str]) -> dict[str, object]:
    body = {"labels": [{"prediction_id": p, "label": lb} for p, lb in pairs]}
    answer = central.client.post("/v1/feedback", json=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()
    return result


@pytest.fixture
def central(central_on_lake: Central) -> Central:
    return central_on_lake


def test_labels_join_idempotently_late_or_unknown_and_feed_realized_accuracy(central: Central) -> None:
    token = central.register("dev-1", group="line-a")
    assert ship(central, token, logged("p1", 90.0, "fault"), logged("p2", 40.0, "ok")) == {
        "received": 2,
        "stored": 2,
    }
    assert ship(central, token, logged("p1", 0.0, "ok")) == {"received": 1, "stored": 0}  # first row kept

    first = label(central, token, ("p1", "fault"), ("p2", "fault"), ("p9", "ok"), ("p1", "fault"))
    assert first == {"accepted": 3, "duplicates": 1, "joined": 2, "unknown": 1, "unknown_ids": ["p9"]}
    assert label(central, token, ("p1", "fault"))["duplicates"] == 1  # the same pair again counts once
    # p9's prediction arrives after its label: it joins then
    ship(central, token, logged("p9", 55.0, "ok"))
    rows = {r.prediction_id: r for r in central.store.labelled_rows("pump")}
    assert set(rows) == {"p1", "p2", "p9"}
    assert rows["p1"].inputs == {"temperature": 90.0, "machine": "m1"}
    assert rows["p2"].label == "fault"
    # realized accuracy reads what was predicted from the log when the label did not say
    records = {r.prediction_id: r for r in central.store.feedback(model="pump")}
    assert {p: (r.predicted, r.label, r.group) for p, r in records.items()} == {
        "p1": ("fault", "fault", "line-a"),
        "p2": ("ok", "fault", "line-a"),
        "p9": ("ok", "ok", "line-a"),
    }


def test_a_device_posts_only_its_own_log_and_bad_bodies_name_the_field(central: Central) -> None:
    token = central.register("dev-1")
    batch = PredictionLogBatch(device_id="dev-2", batch_id="cd" * 16, predictions=[logged("x", 1.0, "ok")])
    answer = central.client.post(
        "/v1/predictions", content=batch.model_dump_json(), headers=JSON | bearer(token)
    )
    assert answer.status_code == 403
    assert "dev-1" in answer.text
    bad = json.loads(batch.model_copy(update={"device_id": "dev-1"}).model_dump_json())
    bad["predictions"][0]["version"] = 0
    answer = central.client.post("/v1/predictions", json=bad, headers=bearer(token))
    assert answer.status_code == 422
    assert "version" in answer.text
    assert central.client.post("/v1/predictions", json=bad).status_code == 401
    landing = central.client.post("/v1/feedback/land", json={"model": "pump"}, headers=bearer(token))
    assert landing.status_code in (401, 403)  # landing is the admin's


def test_the_agent_ships_its_log_and_labelled_rows_land_as_a_dataset(
    central: Central, lake: Path, tmp_path: Path
) -> None:
    token = central.register("dev-1")
    holder = ModelHolder()
    holder.swap(LoadedModel(tmp_path / "model", faults_classifier(tmp_path / "model")))
    log = PredictionLog()
    serving = Serving(holder, prediction_log=log)
    rows = [{"temperature": float(t), "vibration": 1.0, "machine": "m1"} for t in (20, 60, 95)]
    ids = [json.loads(serving.predict(data=row).body)["id"] for row in rows]
    shipper = PredictionShipper(log, "dev-1", str(central.client.base_url), token)
    try:
        assert shipper.ship() == 3
        assert len(log) == 0
    finally:
        shipper.close()
    label(central, token, (ids[0], "ok"), (ids[1], "overheating"))
    land = central.client.post("/v1/feedback/land", json={"model": "faults"}, headers=bearer(ADMIN)).json()
    assert land["dataset"] == "faults.labels"
    assert land["rows"] == 2
    again = central.client.post("/v1/feedback/land", json={"model": "faults"}, headers=bearer(ADMIN)).json()
    assert again == {**land, "rows": 0}  # nothing new since
    label(central, token, (ids[1], "ok"), (ids[2], "overheating"))  # a corrected label lands again
    third = central.client.post("/v1/feedback/land", json={"model": "faults"}, headers=bearer(ADMIN)).json()
    assert third["rows"] == 2
    assert third["snapshot"] != land["snapshot"]
    store = LocalStore(lake)
    snaps = list_snapshots(store, "faults.labels")
    assert [s.rows for s in snaps] == [2, 4]
    table = read_parts(store, snaps[-1].parts).to_pylist()
    assert sorted((r["_prediction_id"], json.loads(r["_label"])) for r in table) == sorted(
        [(ids[0], "ok"), (ids[1], "overheating"), (ids[1], "ok"), (ids[2], "overheating")]
    )
    assert {r["temperature"] for r in table} == {20.0, 60.0, 95.0}
    assert {r["machine"] for r in table} == {"m1"}


def test_a_label_links_to_the_request_span_that_made_its_prediction(
    central: Central, tmp_path: Path, spans: Any
) -> None:
    token = central.register("dev-1")
    holder = ModelHolder()
    holder.swap(LoadedModel(tmp_path / "model", faults_classifier(tmp_path / "model")))
    log = PredictionLog()
    app = create_app(holder, prediction_log=log)

    async def predict() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return await client.post(
                "/predict", json={"temperature": 70.0, "vibration": 2.0, "machine": "m3"}
            )

    answer = asyncio.run(predict())
    shipper = PredictionShipper(log, "dev-1", str(central.client.base_url), token)
    try:
        assert shipper.ship() == 1
    finally:
        shipper.close()
    label(central, token, (answer.json()["id"], "ok"))
    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "agent.request"]
    (feedback,) = [s for s in finished if s.name == "central.feedback"]
    assert [(link.context.trace_id, link.context.span_id) for link in feedback.links] == [
        (request.context.trace_id, request.context.span_id)
    ]
    assert feedback.attributes["edgeml.linked"] == 1
