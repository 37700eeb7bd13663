"""Telemetry intake: idempotent, bounded, validated, counted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from edgeml.central.config import CentralConfig
from edgeml.observability import REGISTRY
from edgeml.telemetry.process import StoreProcess
from telemetry.batches import make_batch

from .conftest import Central, bearer, make_config, running


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("edgeml_central_telemetry_batches_total", {"outcome": name}) or 0.0


def test_a_repeat_gets_the_stored_answer_and_a_changed_body_is_422(central: Central) -> None:
    token = central.register()
    batch = make_batch(rows=12)
    duplicates = outcome("duplicate")
    first = central.post(batch, token)
    assert first.status_code == 200
    assert first.json()["batch_id"] == batch.batch_id
    assert "Idempotent-Replayed" not in first.headers
    again = central.post(batch, token)
    assert again.status_code == 200
    assert again.json() == first.json()  # the stored answer, received_at included
    assert again.headers["Idempotent-Replayed"] == "true"
    assert outcome("duplicate") == duplicates + 1

    changed = central.post(batch.model_copy(update={"rows": 13}), token)
    assert changed.status_code == 422
    assert changed.json()["detail"][0]["loc"] == ["body", "batch_id"]
    assert central.store.batches() == [batch]


def test_the_same_batch_id_from_two_devices_is_two_batches(central: Central) -> None:
    tokens = {name: central.register(name) for name in ("dev-1", "dev-2")}
    one = make_batch("dev-1")
    two = one.model_copy(update={"device_id": "dev-2"})
    assert central.post(one, tokens["dev-1"]).status_code == 200
    assert central.post(two, tokens["dev-2"]).status_code == 200
    assert len(central.store.batches()) == 2


def test_invalid_batches_are_422_naming_the_field(central: Central) -> None:
    token = central.register()
    good = make_batch().model_dump(mode="json")
    cases = {
        "batch_id": good | {"batch_id": "not-hex"},
        "rows": {k: v for k, v in good.items() if k != "rows"},
        "window_end": good | {"window_end": "yesterday"},
        "unexpected": good | {"unexpected": 1},
    }
    for field, body in cases.items():
        answer = central.client.post("/v1/telemetry", json=body, headers=bearer(token))
        assert answer.status_code == 422, field
        assert [e["loc"][-1] for e in answer.json()["detail"]] == [field]
        assert "input" not in answer.json()["detail"][0]  # a big batch is not echoed back
    broken = central.client.post("/v1/telemetry", content=b"{not json", headers=bearer(token))
    assert broken.status_code == 422
    assert central.store.batches() == []


def test_bodies_that_are_no_batch_get_the_answers_of_a_json_api(central: Central) -> None:
    token = central.register()
    rejected = outcome("rejected")

    def post(content: bytes, content_type: str | None, auth: dict[str, str]) -> tuple[int, object]:
        headers = auth | ({"Content-Type": content_type} if content_type else {})
        answer = central.client.post("/v1/telemetry", content=content, headers=headers)
        return answer.status_code, answer.json()["detail"]

    body = make_batch().model_dump_json().encode()
    assert post(b"", "application/json", bearer(token)) == (
        422,
        [{"loc": ["body"], "msg": "Field required", "type": "missing"}],
    )
    status, detail = post(body, "text/plain", bearer(token))  # JSON only when the type says so
    assert (status, [e["loc"] for e in detail]) == (422, [["body"]])
    status, detail = post(body, None, bearer(token))  # no type: no JSON either
    assert (status, [e["loc"] for e in detail]) == (422, [["body"]])
    assert post(b'{"rows": "\xf9"}', "application/json", bearer(token)) == (
        400,
        "There was an error parsing the body",
    )
    assert post(b"{not json", "application/json", {})[0] == 422  # not JSON: before the token
    assert post(body, "application/json", {}) == (
        401,
        "this needs a bearer token (Authorization: Bearer <token>)",
    )
    assert post(b"", "application/json", {})[0] == 401  # a missing body: after the token
    assert outcome("rejected") == rejected + 4
    assert central.store.batches() == []


def test_oversized_bodies_are_413_with_or_without_a_length(tmp_path: Path) -> None:
    with running(make_config(tmp_path, limits={"max_body_bytes": 2000})) as central:
        token = central.register()
        small = make_batch()
        assert central.post(small, token).status_code == 200
        big = make_batch().model_copy(update={"errors": {f"kind-{i}": i for i in range(200)}})
        assert len(big.model_dump_json()) > 2000
        assert central.post(big, token).status_code == 413
        payload = big.model_dump_json().encode()
        chunks = (payload[i : i + 500] for i in range(0, len(payload), 500))  # chunked: no Content-Length
        answer = central.client.post("/v1/telemetry", content=chunks, headers=bearer(token))
        assert answer.status_code == 413
        chunked_small = iter([small.model_dump_json().encode()])
        again = central.client.post(
            "/v1/telemetry",
            content=chunked_small,
            headers=bearer(token) | {"Content-Type": "application/json"},
        )
        assert again.status_code == 200  # a chunked body under the limit goes through
        assert len(central.store.batches()) == 1


def test_a_full_write_queue_is_429_with_retry_after_and_nothing_is_lost(tmp_path: Path) -> None:
    config: CentralConfig = make_config(tmp_path, limits={"max_queued_batches": 3, "retry_after_s": 7})
    with running(config) as central:
        token = central.register()
        store = central.store
        assert isinstance(store, StoreProcess)
        os.kill(store.pid, signal.SIGSTOP)  # the store process stalls (a slow disk, a long checkpoint)
        queued = [make_batch() for _ in range(3)]
        futures = [store.submit(b) for b in queued]
        throttled = outcome("throttled")
        answer = central.post(make_batch(), token)
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "7"
        assert outcome("throttled") == throttled + 1
        os.kill(store.pid, signal.SIGCONT)
        assert all(not f.result(10).duplicate for f in futures)
        assert central.post(make_batch(), token).status_code == 200
        assert len(store.batches()) == 4
