"""tritonclient's HTTP client against a running agent: every OIP v2 REST call, JSON and binary tensors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .oip_agent import RunningAgent, start_agent

pytestmark = pytest.mark.slow

ROWS = [
    {"temperature": 90.0, "vibration": 1.0, "machine": "m1"},
    {"temperature": 40.0, "vibration": 5.0, "machine": "m3"},
    {"temperature": 55.0, "vibration": 0.5, "machine": "m2"},
]


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    running = start_agent(tmp_path_factory.mktemp("oip-http"), max_body_bytes=64 << 10)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(agent: RunningAgent) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(url=agent.http)
    yield triton
    triton.close()


def inputs(rows: list[dict[str, Any]], *, binary: bool = True) -> list[httpclient.InferInput]:
    """The rows as tritonclient inputs, [N, 1] each, the way a Triton user writes them."""
    n = len(rows)
    made = []
    for name, datatype, dtype in [("temperature", "FP32", np.float32), ("vibration", "FP32", np.float32)]:
        tensor = httpclient.InferInput(name, [n, 1], datatype)
        tensor.set_data_from_numpy(np.array([[r[name]] for r in rows], dtype=dtype), binary_data=binary)
        made.append(tensor)
    machine = httpclient.InferInput("machine", [n, 1], "BYTES")
    machine.set_data_from_numpy(np.array([[r["machine"]] for r in rows], dtype=object), binary_data=binary)
    return [*made, machine]


def expected(agent: RunningAgent, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return agent.runtime.predict_records(rows)


def check(result: Any, agent: RunningAgent, rows: list[dict[str, Any]]) -> None:
    want = expected(agent, rows)
    labels = result.as_numpy("label")
    assert [v.decode() if isinstance(v, bytes) else v for v in labels.ravel()] == list(want["label"].ravel())
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)


# --- health and metadata --------------------------------------------------------------------


def test_health_and_readiness(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("faults")
    assert client.is_model_ready("faults", "3")
    assert not client.is_model_ready("faults", "4")
    assert not client.is_model_ready("pump")


def test_metadata(client: httpclient.InferenceServerClient) -> None:
    server = client.get_server_metadata()
    assert server["name"] == "edgeml"
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("faults")
    assert meta == client.get_model_metadata("faults", "3")
    assert meta["versions"] == ["3"]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "temperature": "FP32",
        "vibration": "FP32",
        "machine": "BYTES",
    }
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"label": "BYTES", "probabilities": "FP32"}
    with pytest.raises(InferenceServerException, match="version '4'") as missing:
        client.get_model_metadata("faults", "4")
    assert missing.value.status() == "404"


# --- inference ------------------------------------------------------------------------------


def test_default_request_is_binary_both_ways(
    client: httpclient.InferenceServerClient, agent: RunningAgent
) -> None:
    """tritonclient's defaults: binary inputs, no outputs named, so every output comes back binary."""
    result = client.infer("faults", inputs(ROWS))
    check(result, agent, ROWS)
    for output in result.get_response()["outputs"]:
        assert output["parameters"]["binary_data_size"] > 0
        assert "data" not in output


def test_json_tensors_both_ways(client: httpclient.InferenceServerClient, agent: RunningAgent) -> None:
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    result = client.infer("faults", inputs(ROWS, binary=False), outputs=outputs, request_id="req-7")
    check(result, agent, ROWS)
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == "faults"
    assert response["model_version"] == "3"
    assert all("data" in output for output in response["outputs"])


def test_mixed_inputs_one_output_binary_and_a_version(
    client: httpclient.InferenceServerClient, agent: RunningAgent
) -> None:
    tensors = inputs(ROWS)
    tensors[2].set_data_from_numpy(np.array([[r["machine"]] for r in ROWS], dtype=object), binary_data=False)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True)]
    result = client.infer("faults", tensors, model_version="3", outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["probabilities"]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected(agent, ROWS)["probabilities"], rtol=1e-6
    )


def test_256_rows_binary(client: httpclient.InferenceServerClient, agent: RunningAgent) -> None:
    rng = np.random.default_rng(1)
    rows = [
        {
            "temperature": float(np.float32(rng.normal(60, 15))),
            "vibration": float(np.float32(rng.gamma(2, 1))),
            "machine": str(rng.choice(["m1", "m2", "m3"])),
        }
        for _ in range(256)
    ]
    check(client.infer("faults", inputs(rows)), agent, rows)


def test_answers_are_counted_as_v2(client: httpclient.InferenceServerClient, agent: RunningAgent) -> None:
    def ok() -> float:
        prefix = 'edgeml_inference_requests_total{model="faults",outcome="ok",protocol="v2",version="3"} '
        return next(
            (float(line[len(prefix) :]) for line in agent.metrics().splitlines() if line.startswith(prefix)),
            0.0,
        )

    before = ok()
    client.infer("faults", inputs(ROWS[:1]))
    assert ok() == before + 1


# --- bad input: 4xx naming the problem -------------------------------------------------------


def refused(
    client: httpclient.InferenceServerClient, tensors: list[Any], **kwargs: Any
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("faults", tensors, **kwargs)
    return caught.value


def test_unknown_input(client: httpclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    wrong = httpclient.InferInput("temp", [3, 1], "FP32")
    wrong.set_data_from_numpy(np.ones((3, 1), dtype=np.float32))
    error = refused(client, [wrong, *tensors[1:]])
    assert error.status() == "422"
    assert "unknown input 'temp'" in error.message()


def test_wrong_datatype(client: httpclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    wrong = httpclient.InferInput("machine", [3, 1], "INT32")
    wrong.set_data_from_numpy(np.ones((3, 1), dtype=np.int32))
    error = refused(client, [*tensors[:2], wrong])
    assert error.status() == "422"
    assert error.message().startswith("machine: datatype 'INT32' does not fit")


def test_wrong_shape(client: httpclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    wide = httpclient.InferInput("temperature", [1, 3], "FP32")
    wide.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    error = refused(client, [wide, *tensors[1:]])
    assert error.status() == "422"
    assert error.message().startswith("temperature: shape [1, 3]")


def test_shape_that_binary_data_does_not_fill(client: httpclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    tensors[0].set_shape([4, 1])  # says four rows; its binary data holds three
    error = refused(client, tensors)
    assert error.status() == "422"
    assert error.message() == "temperature: shape [4, 1] says 4 values, data has 3"


def test_value_out_of_range(client: httpclient.InferenceServerClient) -> None:
    error = refused(client, inputs([{**ROWS[0], "temperature": 900.0}]))
    assert error.status() == "422"
    assert error.message() == "temperature: row 0: 900 is above the maximum 200"


def test_a_body_over_the_limit(client: httpclient.InferenceServerClient) -> None:
    rows = [ROWS[0]] * 20_000  # ~ 200 KiB of binary data; the agent takes 64 KiB
    error = refused(client, inputs(rows))
    assert error.status() == "413"
    assert "larger than this server takes" in error.message()


# --- binary sections that do not add up (no client sends these: raw bodies) ----------------


def post(
    agent: RunningAgent, header: dict[str, Any], binary: bytes, length: str | None = "auto"
) -> httpx.Response:
    text = orjson.dumps(header)
    headers = (
        {}
        if length is None
        else {"Inference-Header-Content-Length": str(len(text)) if length == "auto" else length}
    )
    return httpx.post(
        f"http://{agent.http}/v2/models/faults/infer", content=text + binary, headers=headers, timeout=5
    )


def binary_request(sizes: tuple[int, int, int] = (4, 4, 6)) -> dict[str, Any]:
    names = [("temperature", "FP32"), ("vibration", "FP32"), ("machine", "BYTES")]
    return {
        "inputs": [
            {"name": n, "shape": [1, 1], "datatype": t, "parameters": {"binary_data_size": size}}
            for (n, t), size in zip(names, sizes, strict=True)
        ]
    }


BINARY = np.float32(90).tobytes() + np.float32(1).tobytes() + (2).to_bytes(4, "little") + b"m1"


def test_a_raw_binary_request_is_answered(agent: RunningAgent) -> None:
    answer = post(agent, binary_request(), BINARY)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == list(expected(agent, ROWS[:1])["label"])


@pytest.mark.parametrize(
    ("sizes", "binary", "length", "message"),
    [
        ((4, 4, 6), BINARY[:-3], "auto", "machine: binary_data_size is 6 bytes, but the body has 3 bytes"),
        ((4, 4, 6), BINARY + b"xx", "auto", "body: 2 bytes follow the binary data"),
        ((4, 4, 6), BINARY, None, "needs the Inference-Header-Content-Length header"),
        ((4, 4, 6), BINARY, "100000", "Inference-Header-Content-Length: says the JSON is 100,000 bytes"),
        ((4, 4, 6), BINARY, "ten", "Inference-Header-Content-Length: 'ten' is not a byte count"),
        ((3, 5, 6), BINARY, "auto", "temperature: 3 bytes of binary data are not a whole number of FP32"),
        ((4, 4, 6), BINARY[:8] + (9).to_bytes(4, "little") + b"m1", "auto", "machine: a BYTES element of 9"),
        ((4, 4, 7), BINARY + b"x", "auto", "machine: BYTES data ends inside an element's 4-byte length"),
    ],
    ids=[
        "short",
        "oversized",
        "no header",
        "header past the body",
        "header not a number",
        "ragged FP32",
        "BYTES element past its end",
        "ragged BYTES",
    ],
)
def test_binary_sections_that_do_not_add_up_are_400(
    agent: RunningAgent, sizes: tuple[int, int, int], binary: bytes, length: str | None, message: str
) -> None:
    answer = post(agent, binary_request(sizes), binary, length)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
