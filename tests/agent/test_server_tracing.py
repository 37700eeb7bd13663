"""The agent's request spans: sampled, children of a caller's W3C traceparent, and cheap while off."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette

from bundle.conftest import make_manifest, write_model
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.server import create_app
from edgeml.observability import install_tracer_provider, tracer_provider

from .conftest import with_golden

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
BODY = {"a": 1.0, "b": 2.0}
V2_BODY = {
    "inputs": [
        {"name": "a", "shape": [1, 1], "datatype": "FP64", "data": [1.0]},
        {"name": "b", "shape": [1, 1], "datatype": "FP64", "data": [2.0]},
    ]
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Starlette:
    folder = tmp_path_factory.mktemp("model")
    model = LoadedModel(folder, with_golden(make_manifest(write_model(folder, seed=1), 1), folder))
    holder = ModelHolder()
    holder.swap(model)
    return create_app(holder)


def post(app: Starlette, url: str, count: int = 1, body: Any = BODY, **headers: str) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            return [await client.post(url, json=body, headers=headers) for _ in range(count)]

    return asyncio.run(go())


def test_a_request_with_a_traceparent_is_a_server_span_in_the_callers_trace(
    app: Starlette, spans: Any
) -> None:
    (answer,) = post(app, "/predict", traceparent=f"00-{TRACE_ID}-{PARENT}-01")
    assert answer.status_code == 200, answer.text
    (request,) = spans.get_finished_spans()
    assert request.name == "agent.request"
    assert request.kind == SpanKind.SERVER
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.parent is not None
    assert request.parent.is_remote
    assert f"{request.parent.span_id:016x}" == PARENT
    assert request.attributes == {"http.route": "/predict"}


def test_a_callers_unsampled_trace_is_not_recorded(app: Starlette, spans: Any) -> None:
    post(app, "/predict", traceparent=f"00-{TRACE_ID}-{PARENT}-00")
    assert spans.get_finished_spans() == ()


def test_requests_without_a_traceparent_are_sampled_at_the_agents_ratio(app: Starlette) -> None:
    exporter = InMemorySpanExporter()
    install_tracer_provider(tracer_provider(SimpleSpanProcessor(exporter), "edgeml-agent", sample_ratio=0.2))
    try:
        answers = post(app, "/v2/models/pump/infer", count=200, body=V2_BODY)
    finally:
        install_tracer_provider(None)
    assert {a.status_code for a in answers} == {200}
    traced = exporter.get_finished_spans()
    assert 15 <= len(traced) <= 70  # 40 expected; trace ids are random
    assert all(s.parent is None and s.attributes == {"http.route": "/v2/models/{name}/infer"} for s in traced)


def test_once_tracing_is_switched_off_requests_are_not_traced(app: Starlette) -> None:
    exporter = InMemorySpanExporter()
    install_tracer_provider(tracer_provider(SimpleSpanProcessor(exporter), "edgeml-agent"))
    try:
        post(app, "/predict", traceparent=f"00-{TRACE_ID}-{PARENT}-01")
    finally:
        install_tracer_provider(None)
    post(app, "/predict", traceparent=f"00-{TRACE_ID}-{PARENT}-01")
    assert [s.name for s in exporter.get_finished_spans()] == ["agent.request"]
