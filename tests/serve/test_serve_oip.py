"""tritonclient's HTTP client against `edgeml serve`: the agent's OIP v2 answers, binary tensors included."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import Served
from .test_serve import local_model

pytestmark = pytest.mark.slow

ROWS = np.array([[1.0, 0.5], [-2.0, 3.0], [4.0, -1.0]])


def client_of(served: Served) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=served.url.removeprefix("http://"))


def tensors(rows: np.ndarray, *, binary: bool = True) -> list[httpclient.InferInput]:
    made = []
    for i, name in enumerate(("a", "b")):
        tensor = httpclient.InferInput(name, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(rows[:, i : i + 1].copy(), binary_data=binary)
        made.append(tensor)
    return made


def serving_version(served: Served) -> int:
    """The version the deployment serves now (other tests in this package move the channel)."""
    versions = httpx.get(f"{served.url}/v2/models/pump", timeout=30).json()["versions"]
    return int(versions[0])


def expected(served: Served, rows: np.ndarray) -> np.ndarray:
    model = local_model(served, serving_version(served))
    return model.predict({"a": list(rows[:, 0]), "b": list(rows[:, 1])})["variable"]


def test_health_metadata_and_versioned_ready(served: Served) -> None:
    client = client_of(served)
    version = str(serving_version(served))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("pump")
        assert client.is_model_ready("pump", version)
        assert not client.is_model_ready("pump", str(int(version) + 1))
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        assert client.get_model_metadata("pump", version)["versions"] == [version]
    finally:
        client.close()


def test_binary_and_json_tensors(served: Served) -> None:
    client = client_of(served)
    want = expected(served, ROWS)
    try:
        result = client.infer("pump", tensors(ROWS))  # binary both ways, tritonclient's default
        assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 8 * len(ROWS)
        np.testing.assert_array_equal(result.as_numpy("variable"), want)
        as_json = [httpclient.InferRequestedOutput("variable", binary_data=False)]
        result = client.infer("pump", tensors(ROWS, binary=False), outputs=as_json, request_id="r1")
        assert result.get_response()["id"] == "r1"
        np.testing.assert_array_equal(result.as_numpy("variable"), want)
    finally:
        client.close()


def test_concurrent_binary_and_json_requests_batched_together(served: Served) -> None:
    """serve.batch hands mixed requests to one model run; each gets its own rows back, in its form."""
    rng = np.random.default_rng(3)
    batches = [np.round(rng.uniform(-5, 5, size=(int(rng.integers(1, 4)), 2)), 3) for _ in range(24)]

    def one(i: int) -> tuple[np.ndarray, np.ndarray]:
        client = client_of(served)
        try:
            rows = batches[i]
            result = client.infer("pump", tensors(rows, binary=i % 2 == 0))
            return rows, result.as_numpy("variable")
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        for rows, got in pool.map(one, range(len(batches))):
            np.testing.assert_allclose(got, expected(served, rows), rtol=1e-12)


def test_bad_input_is_refused_as_the_agent_refuses_it(served: Served) -> None:
    client = client_of(served)
    try:
        wrong = httpclient.InferInput("c", [1, 1], "FP64")
        wrong.set_data_from_numpy(np.ones((1, 1)))
        with pytest.raises(InferenceServerException, match="unknown input 'c'") as caught:
            client.infer("pump", [*tensors(ROWS[:1]), wrong])
        assert caught.value.status() == "422"
        bad_type = httpclient.InferInput("a", [1, 1], "BYTES")
        bad_type.set_data_from_numpy(np.array([[b"1"]], dtype=object))
        with pytest.raises(InferenceServerException, match="a: datatype 'BYTES' does not fit"):
            client.infer("pump", [bad_type, tensors(ROWS[:1])[1]])
        bad_shape = tensors(ROWS)
        bad_shape[0].set_shape([1, 3])
        with pytest.raises(InferenceServerException, match=r"a: shape \[1, 3\]"):
            client.infer("pump", bad_shape)
    finally:
        client.close()


def test_a_binary_section_that_does_not_add_up_is_400(served: Served) -> None:
    header: dict[str, Any] = {
        "inputs": [
            {"name": n, "shape": [1, 1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
            for n in ("a", "b")
        ]
    }
    text = orjson.dumps(header)
    answer = httpx.post(
        f"{served.url}/v2/models/pump/infer",
        content=text + np.float64(1).tobytes() + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(text))},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error == (
        "body: 4 bytes follow the binary data the inputs' binary_data_size parameters account for (16 bytes)"
    )
