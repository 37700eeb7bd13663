"""The OpenAPI document is complete, and fuzzing every operation in it never gets a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation

from .conftest import ADMIN, Central, make_config, running

# which token each operation is fuzzed with: the one that gets past auth, so the body is what is tested
DEVICE_TOKEN_PATHS = {"/v1/telemetry", "/v1/targets/{device_id}", "/v1/feedback", "/v1/predictions"}


def fuzz(operation: APIOperation, mode: GenerationMode, token: str) -> None:
    """Hypothesis-generated requests for one operation; any 5xx fails (with the request to replay)."""

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Case) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=[not_a_server_error])

    run()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_operation_answers_5xx(tmp_path: Path, mode: GenerationMode) -> None:
    with running(make_config(tmp_path)) as central:
        device_token = central.register("dev-1", group="line-a")
        schema = schemathesis.openapi.from_url(str(central.client.base_url.join("/openapi.json")))
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 17  # every route, /v1/rollouts and PATCH /v1/devices/{id} included
        for operation in operations:
            inputs = len(operation.body) + len(operation.path_parameters) + len(operation.query)
            if mode == GenerationMode.NEGATIVE and not inputs:
                continue  # nothing to get wrong
            fuzz(operation, mode, device_token if operation.path in DEVICE_TOKEN_PATHS else ADMIN)


def test_every_operation_documents_its_answers(central: Central) -> None:
    document = central.client.get("/openapi.json").json()
    operations = [
        (path, method, op) for path, item in document["paths"].items() for method, op in item.items()
    ]
    assert {path for path, _, _ in operations} == {
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/devices",
        "/v1/devices/{device_id}",
        "/v1/devices/{device_id}/decommission",
        "/v1/targets/{device_id}",
        "/v1/telemetry",
        "/v1/feedback",
        "/v1/feedback/land",
        "/v1/predictions",
        "/v1/erase",
        "/v1/fleet",
        "/v1/drift",
        "/v1/rollouts",
    }
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("description") or op.get("summary"), where
        assert "200" in op["responses"] or "201" in op["responses"], where
        if op.get("security"):
            assert "401" in op["responses"], where
    telemetry = document["paths"]["/v1/telemetry"]["post"]
    assert {"401", "403", "413", "422", "429", "503"} <= set(telemetry["responses"])
    body = telemetry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/TelemetryBatch")
    assert set(document["components"]["securitySchemes"]) == {
        "admin",
        "device",
        "deviceOrAdmin",
        "bootstrapOrAdmin",
        "fleetReader",
    }
