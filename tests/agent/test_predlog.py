"""Prediction ids in every answer, and the bounded prediction log within the compliance mode."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.predlog import PredictionLog, new_prediction_id, row_ids
from edgeml.agent.server import Serving

from .classifier import faults_classifier

ROW = {"temperature": 95.0, "vibration": 1.0, "machine": "m2"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifier")


@pytest.fixture(scope="module")
def classifier(folder: Path) -> LoadedModel:
    return LoadedModel(folder, faults_classifier(folder))


def serving(model: LoadedModel, log: PredictionLog | None) -> Serving:
    holder = ModelHolder()
    holder.swap(model)
    return Serving(holder, prediction_log=log)


def v2(rows: list[dict[str, object]], request_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "inputs": [
            {
                "name": "temperature",
                "datatype": "FP32",
                "shape": [len(rows), 1],
                "data": [r["temperature"] for r in rows],
            },
            {
                "name": "vibration",
                "datatype": "FP32",
                "shape": [len(rows), 1],
                "data": [r["vibration"] for r in rows],
            },
            {
                "name": "machine",
                "datatype": "BYTES",
                "shape": [len(rows), 1],
                "data": [r["machine"] for r in rows],
            },
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def test_every_answer_has_an_id_and_a_client_id_is_kept(classifier: LoadedModel) -> None:
    log = PredictionLog()
    service = serving(classifier, log)
    one = orjson.loads(service.predict(data=ROW).body)
    many = orjson.loads(service.predict(data=[ROW, {**ROW, "temperature": 20.0}]).body)
    fresh = orjson.loads(service.infer("faults", None, data=v2([ROW])).body)
    kept = orjson.loads(service.infer("faults", None, data=v2([ROW], "client-7")).body)
    ids = [one["id"], many["id"], fresh["id"]]
    assert len(set(ids)) == 3
    assert all(isinstance(i, str) and i for i in ids)
    assert kept["id"] == "client-7"  # OIP: the answer echoes the request's id
    # without a log (Ray Serve's replicas), answers carry ids all the same
    assert orjson.loads(serving(classifier, None).predict(data=ROW).body)["id"]

    batch, entries = log.take("dev-1") or pytest.fail("nothing logged")
    assert len(entries) == 4
    assert [p.prediction_id for p in batch.predictions] == [
        one["id"],
        *row_ids(many["id"], 2),
        fresh["id"],
        "client-7",
    ]
    first = batch.predictions[0]
    assert first.inputs == pytest.approx(ROW)
    assert first.prediction == one["predictions"][0]["label"]
    assert (first.model, first.version) == ("faults", classifier.version)
    assert batch.predictions[2].inputs["temperature"] == 20.0
    assert log.take("dev-1") is None  # taken: only put_back returns them


def test_pii_inputs_stay_on_the_device_unless_the_mode_is_none(classifier: LoadedModel, folder: Path) -> None:
    manifest = classifier.manifest
    inputs = [f.model_copy(update={"pii": f.name == "machine"}) for f in manifest.inputs]
    for mode, expected in (
        ("none", set(ROW)),
        ("gdpr", {"temperature", "vibration"}),
        ("hipaa", {"temperature", "vibration"}),
    ):
        model = LoadedModel(folder, manifest.model_copy(update={"inputs": inputs, "compliance": mode}))
        log = PredictionLog()
        serving(model, log).predict(data=ROW)
        batch, _ = log.take("dev-1") or pytest.fail("nothing logged")
        assert set(batch.predictions[0].inputs) == expected, mode


def test_the_log_is_bounded_counts_what_it_let_go_and_takes_back_what_failed(classifier: LoadedModel) -> None:
    log = PredictionLog(capacity=3)
    service = serving(classifier, log)
    ids = [orjson.loads(service.predict(data={**ROW, "temperature": float(t)}).body)["id"] for t in range(5)]
    assert len(log) == 3
    batch, entries = log.take("dev-1") or pytest.fail("nothing logged")
    assert [p.prediction_id for p in batch.predictions] == ids[2:]
    assert batch.dropped_before == 2
    log.put_back(batch, entries)  # the central node did not get it: same rows, drops still owed
    again, _ = log.take("dev-1") or pytest.fail("nothing put back")
    assert [p.prediction_id for p in again.predictions] == ids[2:]
    assert again.dropped_before == 2


def test_ids_are_unique_and_rows_are_numbered() -> None:
    assert len({new_prediction_id() for _ in range(10_000)}) == 10_000
    assert row_ids("abc", 1) == ["abc"]
    assert row_ids("abc", 3) == ["abc/0", "abc/1", "abc/2"]


def test_a_central_node_that_is_down_keeps_the_log_and_is_not_hammered(classifier: LoadedModel) -> None:
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from edgeml.agent.predlog import PredictionShipper

    posts: list[bytes] = []

    class Central(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with socket.socket() as sock:  # a port nothing listens on yet
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = PredictionLog()
    serving(classifier, log).predict(data=ROW)
    shipper = PredictionShipper(log, "dev-1", f"http://127.0.0.1:{port}", "token")
    assert shipper.ship() == 0  # refused
    assert len(log) == 1  # kept for later
    server = ThreadingHTTPServer(("127.0.0.1", port), Central)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert shipper.ship() == 0  # up again, but the shipper backs off a while
        assert posts == []
        assert len(log) == 1
    finally:
        shipper.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
