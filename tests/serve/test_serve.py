"""`edgeml serve` on a real local Ray: answers, bad input as the agent answers it, batching, swaps."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import httpx
import pytest

from agent.test_server import call as agent_call
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.server import create_app
from edgeml.bundle.keys import KeyRing

from .conftest import MAX_BODY, MAX_ROWS, Served

pytestmark = pytest.mark.slow

V2 = "/v2/models/pump/infer"


def v2_body(rows: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "a", "shape": [len(rows), 1], "datatype": "FP64", "data": [r[0] for r in rows]},
            {"name": "b", "shape": [len(rows), 1], "datatype": "FP64", "data": [r[1] for r in rows]},
        ]
    }


def local_model(served: Served, version: int) -> LoadedModel:
    """The bundle the channel names, verified and loaded here, as a device would."""
    from edgeml.bundle.manifest import manifest_key
    from edgeml.bundle.verify import fetch_bundle

    staged = fetch_bundle(
        served.publisher.store,
        manifest_key(served.publisher.model, version, "x86-64-generic"),
        KeyRing.from_dir(served.publisher.ring),
        served.publisher.work / f"check-{version}",
    )
    return LoadedModel(staged.path, staged.manifest)


def test_the_deployment_serves_the_channels_bundle(served: Served) -> None:
    model = local_model(served, 1)
    expected = model.predict({"a": [1.0, -2.0], "b": [0.5, 3.0]})["variable"].ravel().tolist()
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/pump").json()["versions"] == ["1"]
        body = client.post("/predict", json=[{"a": 1.0, "b": 0.5}, {"a": -2.0, "b": 3.0}]).json()
        assert isinstance(body.pop("id"), str)  # each answer its own prediction id
        assert body == {"model": "pump", "version": 1, "predictions": [{"variable": v} for v in expected]}
        v2 = client.post(V2, json=v2_body([(1.0, 0.5), (-2.0, 3.0)])).json()
        assert v2["outputs"] == [{"name": "variable", "datatype": "FP64", "shape": [2, 1], "data": expected}]
        metrics = client.get("/metrics").text
        status = client.get("/serve/status").json()
    replica = status["replica"]
    assert status["version"] == 1
    assert (
        'edgeml_inference_requests_total{model="pump",outcome="ok",protocol="predict",'
        f'replica="{replica}",version="1"}} 1.0'
    ) in metrics
    assert f'edgeml_model_info{{model="pump",profile="x86-64-generic",replica="{replica}"' in metrics
    # Ray's proxy reaches the same replicas, with the same answers.
    with httpx.Client(base_url=served.deployed.proxy_url) as client:
        again = client.post("/predict", json=[{"a": 1.0, "b": 0.5}, {"a": -2.0, "b": 3.0}]).json()
        assert again.pop("id") != ""
        assert again == body


BAD = [
    # (name, path, request kwargs, status, field)
    ("unknown input", "/predict", {"json": {"a": 1.0, "b": 1.0, "c": 2.0}}, 422, "c"),
    (
        "wrong dtype",
        V2,
        {"json": {"inputs": [{"name": "a", "shape": [1, 1], "datatype": "BYTES", "data": ["1"]}]}},
        422,
        "a",
    ),
    ("above max", "/predict", {"json": {"a": 10.5, "b": 1.0}}, 422, "a"),
    ("below min", V2, {"json": v2_body([(-11.0, 1.0)])}, 422, "a"),
    ("too many rows", "/predict", {"json": [{"a": 1.0, "b": 1.0}] * (MAX_ROWS + 1)}, 422, "records"),
    ("oversized", "/predict", {"content": b" " * (MAX_BODY + 1)}, 413, "body"),
    ("malformed JSON", "/predict", {"content": b'{"a": 1,'}, 400, "body"),
    ("unknown model", "/v2/models/other/infer", {"json": v2_body([(1.0, 1.0)])}, 404, None),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_the_agents_answer(
    served: Served, path: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    holder = ModelHolder()
    holder.swap(local_model(served, 1))
    agent = agent_call(create_app(holder, max_body_bytes=MAX_BODY, max_rows=MAX_ROWS), "POST", path, **kwargs)
    answer = httpx.post(served.url + path, **kwargs)
    assert answer.status_code == agent.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == agent.json()
    if field is not None:
        assert answer.json()["field"] == field


def test_concurrent_requests_are_answered_in_batches(served: Served) -> None:
    async def load() -> list[int]:
        # 600 requests queue for 32 connections: on a loaded machine, longer than httpx's 5 s default
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=60) as client:

            async def one(i: int) -> int:
                answer = await client.post("/predict", json={"a": (i % 20) - 10.0, "b": float(i)})
                return answer.status_code

            return await asyncio.gather(*(one(i) for i in range(600)))

    before = httpx.get(served.url + "/serve/status").json()["batch_sizes"]
    assert set(asyncio.run(load())) == {200}
    after = httpx.get(served.url + "/serve/status").json()["batch_sizes"]
    grown = {int(size): n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    assert sum(size * n for size, n in grown.items()) == 600
    assert max(grown) > 1, grown


def test_a_channel_move_under_load_fails_no_request(served: Served) -> None:
    inputs = [(random.Random(i).uniform(-10, 10), random.Random(-i).uniform(-5, 5)) for i in range(20)]
    columns = {"a": [a for a, _ in inputs], "b": [b for _, b in inputs]}
    served.publisher.bundle(2)  # published before the move, so the move is only the pointer
    expected = {v: local_model(served, v).predict(columns)["variable"].ravel().tolist() for v in (1, 2)}
    assert expected[1] != expected[2]
    failures: list[str] = []
    seen: list[int] = []
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=served.url) as client:
            while not stop.is_set():
                i = rng.randrange(len(inputs))
                if rng.random() < 0.5:
                    answer = client.post("/predict", json={"a": inputs[i][0], "b": inputs[i][1]})
                    if answer.status_code == 200:
                        body = answer.json()
                        version, got = body["version"], body["predictions"][0]["variable"]
                else:
                    answer = client.post(V2, json=v2_body([inputs[i]]))
                    if answer.status_code == 200:
                        body = answer.json()
                        version, got = int(body["model_version"]), body["outputs"][0]["data"][0]
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text}")
                elif got != expected[version][i]:
                    failures.append(f"v{version} answered {got} for row {i}, expected {expected[version][i]}")
                seen.append(version)

    from edgeml.bundle.rollout import publish

    clients = [threading.Thread(target=client_loop, args=(s,)) for s in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    publish(served.publisher.store, served.publisher.signer, served.publisher.model, 2, "stable")
    deadline = time.monotonic() + 30
    while (not seen or seen[-1] != 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # keep the load on after the swap
    stop.set()
    for thread in clients:
        thread.join(30)
    assert failures == []
    assert seen[0] == 1
    assert seen[-1] == 2
    switched = seen.index(2)
    assert set(seen[:switched]) == {1}
    assert len(seen) > 200
