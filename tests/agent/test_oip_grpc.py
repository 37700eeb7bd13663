"""tritonclient's gRPC client against a running agent: every GRPCInferenceService call, good and bad."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb
from edgeml.agent.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from .oip_agent import RunningAgent, start_agent

pytestmark = pytest.mark.slow

ROWS = [
    {"temperature": 90.0, "vibration": 1.0, "machine": "m1"},
    {"temperature": 40.0, "vibration": 5.0, "machine": "m3"},
]
INVALID = "StatusCode.INVALID_ARGUMENT"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    running = start_agent(tmp_path_factory.mktemp("oip-grpc"), max_body_bytes=64 << 10)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(agent: RunningAgent) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(url=agent.grpc)
    yield triton
    triton.close()


def inputs(rows: list[dict[str, Any]]) -> list[grpcclient.InferInput]:
    n = len(rows)
    made = []
    for name in ("temperature", "vibration"):
        tensor = grpcclient.InferInput(name, [n, 1], "FP32")
        tensor.set_data_from_numpy(np.array([[r[name]] for r in rows], dtype=np.float32))
        made.append(tensor)
    machine = grpcclient.InferInput("machine", [n, 1], "BYTES")
    machine.set_data_from_numpy(np.array([[r["machine"]] for r in rows], dtype=object))
    return [*made, machine]


def check(result: Any, agent: RunningAgent, rows: list[dict[str, Any]]) -> None:
    want = agent.runtime.predict_records(rows)
    assert [v.decode() for v in result.as_numpy("label").ravel()] == list(want["label"].ravel())
    np.testing.assert_allclose(result.as_numpy("probabilities"), want["probabilities"], rtol=1e-6)


def test_health_and_readiness(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("faults")
    assert client.is_model_ready("faults", "3")
    assert not client.is_model_ready("faults", "4")
    assert not client.is_model_ready("pump")


def test_metadata_matches_rest(client: grpcclient.InferenceServerClient, agent: RunningAgent) -> None:
    import httpx

    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "edgeml"
    assert server["extensions"] == ["binary_tensor_data"]
    meta = client.get_model_metadata("faults", as_json=True)
    rest = httpx.get(f"http://{agent.http}/v2/models/faults", timeout=5).json()
    assert meta["name"] == rest["name"] == "faults"
    assert meta["versions"] == ["3"]
    assert meta["platform"] == rest["platform"]
    for kind in ("inputs", "outputs"):  # protobuf's JSON writes int64 shapes as strings
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]] == [
            (t["name"], t["datatype"], t["shape"]) for t in rest[kind]
        ]
    with pytest.raises(InferenceServerException, match="version '4'") as missing:
        client.get_model_metadata("faults", "4")
    assert missing.value.status() == "StatusCode.NOT_FOUND"


def test_infer_with_the_defaults(client: grpcclient.InferenceServerClient, agent: RunningAgent) -> None:
    result = client.infer("faults", inputs(ROWS))
    check(result, agent, ROWS)
    response = result.get_response()
    assert response.model_name == "faults"
    assert response.model_version == "3"
    assert [o.name for o in response.outputs] == ["label", "probabilities"]
    assert [list(o.shape) for o in response.outputs] == [[2], [2, 3]]


def test_infer_an_output_a_version_and_an_id(
    client: grpcclient.InferenceServerClient, agent: RunningAgent
) -> None:
    result = client.infer(
        "faults",
        inputs(ROWS),
        model_version="3",
        outputs=[grpcclient.InferRequestedOutput("probabilities")],
        request_id="req-9",
    )
    response = result.get_response()
    assert response.id == "req-9"
    assert [o.name for o in response.outputs] == ["probabilities"]
    want = agent.runtime.predict_records(ROWS)["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-6)


def test_256_rows(client: grpcclient.InferenceServerClient, agent: RunningAgent) -> None:
    rng = np.random.default_rng(2)
    rows = [
        {
            "temperature": float(np.float32(rng.normal(60, 15))),
            "vibration": float(np.float32(rng.gamma(2, 1))),
            "machine": str(rng.choice(["m1", "m2", "m3"])),
        }
        for _ in range(256)
    ]
    check(client.infer("faults", inputs(rows)), agent, rows)


def test_typed_contents_are_taken_as_raw_contents_are(agent: RunningAgent) -> None:
    """Clients that fill InferTensorContents (not tritonclient's raw form) get the same answer."""
    request = pb.ModelInferRequest(model_name="faults")
    for name in ("temperature", "vibration"):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[2, 1])
        tensor.contents.fp32_contents.extend([r[name] for r in ROWS])
    machine = request.inputs.add(name="machine", datatype="BYTES", shape=[2, 1])
    machine.contents.bytes_contents.extend([r["machine"].encode() for r in ROWS])
    with grpc.insecure_channel(agent.grpc) as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
    probabilities = np.frombuffer(response.raw_output_contents[1], dtype="<f4").reshape(2, 3)
    np.testing.assert_allclose(probabilities, agent.runtime.predict_records(ROWS)["probabilities"], rtol=1e-6)


def test_answers_are_counted_as_grpc(client: grpcclient.InferenceServerClient, agent: RunningAgent) -> None:
    def count(outcome: str) -> float:
        labels = f'model="faults",outcome="{outcome}",protocol="grpc",version="3"'
        prefix = f"edgeml_inference_requests_total{{{labels}}} "
        lines = agent.metrics().splitlines()
        return next((float(line[len(prefix) :]) for line in lines if line.startswith(prefix)), 0.0)

    ok, bad = count("ok"), count("bad_input")
    client.infer("faults", inputs(ROWS[:1]))
    with pytest.raises(InferenceServerException):
        client.infer("faults", inputs([{**ROWS[0], "temperature": 900.0}]))
    assert (count("ok"), count("bad_input")) == (ok + 1, bad + 1)


# --- bad input: a gRPC error code with a message naming the problem --------------------------


def refused(
    client: grpcclient.InferenceServerClient, tensors: list[Any], model: str = "faults"
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, tensors)
    return caught.value


def test_unknown_input(client: grpcclient.InferenceServerClient) -> None:
    wrong = grpcclient.InferInput("temp", [2, 1], "FP32")
    wrong.set_data_from_numpy(np.ones((2, 1), dtype=np.float32))
    error = refused(client, [wrong, *inputs(ROWS)[1:]])
    assert error.status() == INVALID
    assert "unknown input 'temp'" in error.message()


def test_wrong_datatype(client: grpcclient.InferenceServerClient) -> None:
    wrong = grpcclient.InferInput("machine", [2, 1], "INT32")
    wrong.set_data_from_numpy(np.ones((2, 1), dtype=np.int32))
    error = refused(client, [*inputs(ROWS)[:2], wrong])
    assert error.status() == INVALID
    assert error.message().startswith("machine: datatype 'INT32' does not fit")


def test_wrong_shape(client: grpcclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    tensors[0].set_shape([2, 2])
    error = refused(client, tensors)
    assert error.status() == INVALID
    assert error.message().startswith("temperature: shape [2, 2]")


def test_raw_contents_that_do_not_fill_the_shape(client: grpcclient.InferenceServerClient) -> None:
    tensors = inputs(ROWS)
    tensors[1].set_shape([3, 1])
    error = refused(client, tensors)
    assert error.status() == INVALID
    assert error.message() == "vibration: shape [3, 1] says 3 values, data has 2"


def test_raw_contents_for_fewer_inputs_than_named(agent: RunningAgent) -> None:
    request = pb.ModelInferRequest(model_name="faults", raw_input_contents=[np.float32(1).tobytes()])
    request.inputs.add(name="temperature", datatype="FP32", shape=[1, 1])
    request.inputs.add(name="machine", datatype="BYTES", shape=[1, 1])
    with grpc.insecure_channel(agent.grpc) as channel, pytest.raises(grpc.RpcError) as caught:
        GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        caught.value.details()
        == "raw_input_contents: holds 1 tensors for 2 inputs: send one per input, in their order"
    )


def test_unknown_model_and_version(client: grpcclient.InferenceServerClient) -> None:
    error = refused(client, inputs(ROWS), model="pump")
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "model 'pump' is not served here" in error.message()
    with pytest.raises(InferenceServerException) as caught:
        client.infer("faults", inputs(ROWS), model_version="7")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_a_message_over_the_limit(client: grpcclient.InferenceServerClient) -> None:
    error = refused(client, inputs([ROWS[0]] * 20_000))  # ~ 200 KiB; the agent takes 64 KiB
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in error.message()


def test_a_port_already_taken_is_an_error_naming_it() -> None:
    import socket

    from edgeml.agent.grpc import GrpcServer
    from edgeml.agent.model import ModelHolder
    from edgeml.agent.server import Serving

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            GrpcServer(Serving(ModelHolder()), port=port)


def test_a_server_never_started_frees_its_port_when_stopped() -> None:
    """`edgeml serve` binds before deploying and may stop without starting (grpcio keeps the socket)."""
    import socket

    from edgeml.agent.grpc import GrpcServer
    from edgeml.agent.model import ModelHolder
    from edgeml.agent.server import Serving

    server = GrpcServer(Serving(ModelHolder()), port=0)
    server.stop()
    with socket.socket() as again:
        again.bind(("127.0.0.1", server.port))
