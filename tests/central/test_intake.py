"""The telemetry fast path answers exactly what FastAPI's route answers, for every kind of request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from edgeml.central.app import create_app
from edgeml.central.config import CentralConfig
from edgeml.central.intake import TelemetryIntake
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import TelemetryBatch
from telemetry.batches import make_batch

from .conftest import ADMIN, Central, bearer, make_config, uvicorn_server

LIMIT = 64 * 1024


@contextmanager
def serving(config: CentralConfig, *, fast_path: bool) -> Iterator[Central]:
    app = create_app(config)
    if not fast_path:  # the middleware stack is built at the first request: leave the intake out
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TelemetryIntake]
    with uvicorn_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Central(app, client, config)


def script(central: Central, batches: list[TelemetryBatch]) -> dict[str, httpx.Response]:
    """The same requests, in the same order, to one node: each kind of answer the intake can give."""
    tokens = {d: central.register(d) for d in ("dev-1", "dev-2", "dev-3")}
    batch, charset, chunked, other, retired = batches
    body = batch.model_dump_json()
    json_type = {"Content-Type": "application/json"}

    def post(content: Any, headers: dict[str, str]) -> httpx.Response:
        return central.client.post("/v1/telemetry", content=content, headers=headers)

    answers = {
        "new": post(body, bearer(tokens["dev-1"]) | json_type),
        "repeat": post(body, bearer(tokens["dev-1"]) | json_type),
        "same id, other body": central.post(batch.model_copy(update={"rows": 11}), tokens["dev-1"]),
        "charset in the type": post(
            charset.model_dump_json(),
            bearer(tokens["dev-1"]) | {"Content-Type": "Application/JSON; charset=utf-8"},
        ),
        "chunked": post(iter([chunked.model_dump_json().encode()]), bearer(tokens["dev-1"]) | json_type),
        "another device's batch": central.post(other, tokens["dev-1"]),
        "no token": post(body, json_type),
        "unknown token": post(body, bearer("not-a-device-token") | json_type),
        "admin token": post(body, bearer(ADMIN) | json_type),
        "basic auth": post(body, {"Authorization": "Basic ZGV2LTE6eA=="} | json_type),
        "invalid batch": post(body.replace(batch.batch_id, "not-hex"), bearer(tokens["dev-1"]) | json_type),
        "not JSON": post(b"{rows: 3", bearer(tokens["dev-1"]) | json_type),
        "text/plain": post(body, bearer(tokens["dev-1"]) | {"Content-Type": "text/plain"}),
        "oversized": post(b"[" + b" " * LIMIT + b"]", bearer(tokens["dev-1"]) | json_type),
    }
    answer = central.client.post("/v1/devices/dev-3/decommission", headers=bearer(ADMIN))
    assert answer.status_code == 200, answer.text
    answers["decommissioned"] = central.post(retired, tokens["dev-3"])
    return answers


def comparable(answer: httpx.Response) -> tuple[Any, ...]:
    """What a client sees, less what differs between two runs (ids and times)."""
    body = answer.json()
    if answer.status_code == 200:
        body = sorted(body)
    headers = {
        k: answer.headers.get(k)
        for k in ("content-type", "idempotent-replayed", "retry-after", "www-authenticate")
    }
    return answer.status_code, body, headers


def http_count(status: str) -> float:
    labels = {"route": "/v1/telemetry", "method": "POST", "status": status}
    return REGISTRY.get_sample_value("edgeml_http_request_seconds_count", labels) or 0.0


def test_the_fast_path_answers_what_the_route_answers(tmp_path: Path) -> None:
    answers: dict[bool, dict[str, httpx.Response]] = {}
    batches = [make_batch(d) for d in ("dev-1", "dev-1", "dev-1", "dev-2", "dev-3")]
    for fast in (False, True):
        config = make_config(tmp_path / str(fast), limits={"max_body_bytes": LIMIT})
        with serving(config, fast_path=fast) as central:
            answers[fast] = script(central, batches)
            stored = len(central.store.batches())
        assert stored == 3  # new, charset in the type, chunked
    expected = {
        "new": 200,
        "repeat": 200,
        "same id, other body": 422,
        "another device's batch": 403,
        "no token": 401,
        "unknown token": 401,
        "admin token": 401,
        "invalid batch": 422,
        "not JSON": 422,
        "oversized": 413,
        "decommissioned": 401,
    }
    for case, generic in answers[False].items():
        fast = answers[True][case]
        assert comparable(fast) == comparable(generic), case
        if case in expected:
            assert fast.status_code == expected[case], (case, fast.text)
    assert answers[True]["repeat"].json() == answers[True]["new"].json()


def test_the_fast_path_is_timed_and_counted_like_the_route(tmp_path: Path) -> None:
    with serving(make_config(tmp_path / "central"), fast_path=True) as central:
        token = central.register()
        before = http_count("200"), http_count("422")
        batch = make_batch()
        assert central.post(batch, token).status_code == 200
        assert central.post(batch.model_copy(update={"rows": 11}), token).status_code == 422
        assert (http_count("200"), http_count("422")) == (before[0] + 1, before[1] + 1)
