"""tritonclient's gRPC client against `edgeml serve`: every GRPCInferenceService call, good and bad.

Each call is made on both gRPC addresses `edgeml serve --grpc-port` gives: the front on the port
named (the agent's gRPC service in front of the deployment's handle) and a replica's own port
(the agent's gRPC service in the replica). Bad input must get the same code and message as the
agent's own gRPC service gives.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from edgeml.agent.grpc import GrpcServer
from edgeml.agent.grpc import grpc_predict_v2_pb2 as pb
from edgeml.agent.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from edgeml.agent.model import ModelHolder
from edgeml.agent.server import Serving
from edgeml.serve.grpcfront import grpc_front

from .conftest import MAX_BODY, MAX_ROWS, Served, free_port
from .test_serve import local_model
from .test_serve_oip import expected, serving_version

pytestmark = pytest.mark.slow

ROWS = np.array([[1.0, 0.5], [-2.0, 3.0], [4.0, -1.0]])
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def front(served: Served) -> Iterator[GrpcServer]:
    """The gRPC front `edgeml serve --grpc-port` runs, on a free port of 127.0.0.1."""
    server = grpc_front(served.config.model, host="127.0.0.1", port=0, max_message_bytes=MAX_BODY)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["front", "replica"])
def address(request: pytest.FixtureRequest, front: GrpcServer, served: Served) -> str:
    """The front's address, or the one replica's own gRPC address."""
    if request.param == "front":
        return front.address
    (replica,) = served.deployed.replica_grpc
    return replica


@pytest.fixture
def client(address: str) -> Iterator[grpcclient.InferenceServerClient]:
    triton = grpcclient.InferenceServerClient(url=address)
    yield triton
    triton.close()


def tensors(rows: np.ndarray) -> list[grpcclient.InferInput]:
    made = []
    for i, name in enumerate(("a", "b")):
        tensor = grpcclient.InferInput(name, [len(rows), 1], "FP64")
        tensor.set_data_from_numpy(rows[:, i : i + 1].copy())
        made.append(tensor)
    return made


def test_health_and_readiness(client: grpcclient.InferenceServerClient, served: Served) -> None:
    version = str(serving_version(served))
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("pump")
    assert client.is_model_ready("pump", version)
    assert not client.is_model_ready("pump", str(int(version) + 1))
    assert not client.is_model_ready("other")


def test_metadata_matches_rest(client: grpcclient.InferenceServerClient, served: Served) -> None:
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "edgeml"
    assert server["extensions"] == ["binary_tensor_data"]
    version = str(serving_version(served))
    rest = httpx.get(f"{served.url}/v2/models/pump", timeout=30).json()
    for meta in (
        client.get_model_metadata("pump", as_json=True),
        client.get_model_metadata("pump", version, as_json=True),
    ):
        assert meta["name"] == rest["name"] == "pump"
        assert meta["versions"] == rest["versions"] == [version]
        assert meta["platform"] == rest["platform"]
        for kind in ("inputs", "outputs"):  # protobuf's JSON writes int64 shapes as strings
            assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]] == [
                (t["name"], t["datatype"], t["shape"]) for t in rest[kind]
            ]
    with pytest.raises(InferenceServerException, match=f"version '{int(version) + 1}'") as missing:
        client.get_model_metadata("pump", str(int(version) + 1))
    assert missing.value.status() == "StatusCode.NOT_FOUND"


def test_infer_with_the_defaults(client: grpcclient.InferenceServerClient, served: Served) -> None:
    """tritonclient's default: raw_input_contents in, raw_output_contents back."""
    version = serving_version(served)
    result = client.infer("pump", tensors(ROWS), request_id="r-7")
    np.testing.assert_array_equal(result.as_numpy("variable"), expected(served, ROWS))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("pump", str(version), "r-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("variable", "FP64", [3, 1])]
    versioned = client.infer("pump", tensors(ROWS[:1]), model_version=str(version))
    np.testing.assert_array_equal(versioned.as_numpy("variable"), expected(served, ROWS[:1]))


def typed_request(rows: np.ndarray) -> Any:
    """A ModelInferRequest with typed contents (as KServe's and other clients send), not raw."""
    request = pb.ModelInferRequest(model_name="pump", id="typed")
    for i, name in enumerate(("a", "b")):
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(rows), 1])
        tensor.contents.fp64_contents.extend(rows[:, i].tolist())
    return request


def test_typed_contents_get_the_answer_raw_contents_get(address: str, served: Served) -> None:
    with grpc.insecure_channel(address) as channel:
        response = GRPCInferenceServiceStub(channel).ModelInfer(typed_request(ROWS), timeout=30)
    assert response.id == "typed"
    got = np.frombuffer(response.raw_output_contents[0], dtype="<f8").reshape(3, 1)
    np.testing.assert_array_equal(got, expected(served, ROWS))


def test_concurrent_calls_are_each_answered_with_their_rows(address: str, served: Served) -> None:
    rng = np.random.default_rng(5)
    batches = [np.round(rng.uniform(-5, 5, size=(int(rng.integers(1, 4)), 2)), 3) for _ in range(24)]

    def one(rows: np.ndarray) -> np.ndarray:
        triton = grpcclient.InferenceServerClient(url=address)
        try:
            return triton.infer("pump", tensors(rows)).as_numpy("variable")
        finally:
            triton.close()

    with ThreadPoolExecutor(8) as pool:
        for rows, got in zip(batches, pool.map(one, batches), strict=True):
            np.testing.assert_allclose(got, expected(served, rows), rtol=1e-12)


def count(served: Served, outcome: str) -> float:
    """The replica's own count of gRPC requests with this outcome, from its /metrics."""
    version = serving_version(served)
    replica = httpx.get(f"{served.url}/serve/status", timeout=30).json()["replica"]
    labels = f'model="pump",outcome="{outcome}",protocol="grpc",replica="{replica}",version="{version}"'
    prefix = f"edgeml_inference_requests_total{{{labels}}} "
    lines = httpx.get(f"{served.url}/metrics", timeout=30).text.splitlines()
    return next((float(line[len(prefix) :]) for line in lines if line.startswith(prefix)), 0.0)


def test_calls_are_counted_as_grpc_by_the_replica(
    client: grpcclient.InferenceServerClient, served: Served
) -> None:
    ok, bad = count(served, "ok"), count(served, "bad_input")
    client.infer("pump", tensors(ROWS[:1]))
    with pytest.raises(InferenceServerException):
        client.infer("pump", tensors(np.array([[10.5, 0.0]])))
    assert (count(served, "ok"), count(served, "bad_input")) == (ok + 1, bad + 1)


# --- bad input: the agent's gRPC code and message ------------------------------------------


def raw_request(
    inputs: list[tuple[str, str, list[int], bytes]], model: str = "pump", version: str = ""
) -> Any:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def f64(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


B = ("b", "FP64", [1, 1], f64(0.5))
BAD = [
    # (name, request, code, message)
    (
        "wrong input name",
        raw_request([("a", "FP64", [1, 1], f64(1.0)), B, ("c", "FP64", [1, 1], f64(2.0))]),
        INVALID,
        "unknown input 'c'",
    ),
    (
        "wrong datatype",
        raw_request([("a", "BYTES", [1, 1], b"\1\0\0\0" + b"1"), B]),
        INVALID,
        "a: datatype 'BYTES' does not fit",
    ),
    ("wrong shape", raw_request([("a", "FP64", [1, 2], f64(1.0, 2.0)), B]), INVALID, "a: shape [1, 2]"),
    (
        "raw section larger than its shape",
        raw_request([("a", "FP64", [1, 1], f64(1.0, 2.0)), B]),
        INVALID,
        "a: shape [1, 1] says 1 values, data has 2",
    ),
    (
        "raw section not whole values",
        raw_request([("a", "FP64", [1, 1], f64(1.0) + b"\0" * 4), B]),
        INVALID,
        "a: 12 bytes of binary data are not a whole number of FP64 values",
    ),
    ("out of range", raw_request([("a", "FP64", [1, 1], f64(10.5)), B]), INVALID, "a: "),
    (
        "too many rows",
        raw_request([(n, "FP64", [MAX_ROWS + 1, 1], f64(*[1.0] * (MAX_ROWS + 1))) for n in "ab"]),
        INVALID,
        f"a: {MAX_ROWS + 1} rows is more than this server takes per request ({MAX_ROWS})",
    ),
    (
        "unknown model",
        raw_request([("a", "FP64", [1, 1], f64(1.0)), B], model="other"),
        grpc.StatusCode.NOT_FOUND,
        "model 'other' is not served here",
    ),
    (
        "unknown version",
        raw_request([("a", "FP64", [1, 1], f64(1.0)), B], version="99"),
        grpc.StatusCode.NOT_FOUND,
        "version '99'",
    ),
    (
        "over the message limit",
        raw_request([(n, "FP64", [MAX_BODY // 8, 1], f64(*[1.0] * (MAX_BODY // 8))) for n in "ab"]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
]


@pytest.fixture(scope="module")
def agent_grpc(served: Served) -> Iterator[str]:
    """The agent's own gRPC service over the bundle the deployment serves, for comparison."""
    holder = ModelHolder()
    holder.swap(local_model(served, serving_version(served)))
    server = GrpcServer(Serving(holder, max_rows=MAX_ROWS), port=0, max_message_bytes=MAX_BODY)
    server.start()
    yield server.address
    server.stop()


def refusal(address: str, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
        GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    return caught.value


@pytest.mark.parametrize(("request_", "code", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_the_agents_code_and_message(
    address: str, agent_grpc: str, request_: Any, code: grpc.StatusCode, message: str
) -> None:
    got, agent = refusal(address, request_), refusal(agent_grpc, request_)
    assert got.code() == agent.code() == code
    assert message in got.details()
    assert got.details() == agent.details()


def test_tritonclient_sees_the_problem_named(client: grpcclient.InferenceServerClient) -> None:
    wrong = grpcclient.InferInput("c", [1, 1], "FP64")
    wrong.set_data_from_numpy(np.ones((1, 1)))
    with pytest.raises(InferenceServerException, match="unknown input 'c'") as caught:
        client.infer("pump", [*tensors(ROWS[:1]), wrong])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


# --- the front itself ----------------------------------------------------------------------


def test_an_app_not_deployed_is_unavailable_naming_it(served: Served) -> None:
    server = grpc_front("absent", port=0)
    server.start()
    try:
        triton = grpcclient.InferenceServerClient(url=server.address)
        try:
            assert triton.is_server_live()
            assert not triton.is_server_ready()
            with pytest.raises(InferenceServerException, match="absent: no replica answered") as caught:
                triton.infer("pump", tensors(ROWS[:1]))
            assert caught.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            triton.close()
    finally:
        server.stop()


def test_a_port_already_taken_is_an_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
            grpc_front("pump", port=port)


def test_the_cli_refuses_a_taken_grpc_port_before_deploying(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeml.cli import main

    monkeypatch.setenv("EDGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGEML_STORE_URL", served.publisher.store.url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "pump", "--keyring", str(served.publisher.ring), "--grpc-port", str(port)])
    assert code == 2
    assert f"--grpc-port: cannot serve gRPC on 127.0.0.1:{port}" in capsys.readouterr().err


def test_help_names_the_grpc_port(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeml.cli import main

    monkeypatch.setenv("COLUMNS", "160")  # at 80, rich cuts the service's name short
    assert main(["serve", "--help"]) == 0
    words = capsys.readouterr().out.replace("│", " ").split()  # rich wraps the help in a box
    assert "--grpc-port" in words
    assert "(inference.GRPCInferenceService," in words


def test_a_second_model_on_the_same_serve_is_refused_naming_the_first(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray Serve takes one app at `/`; `edgeml serve` says so (it was an internal error), and the
    gRPC port it had bound is released."""
    import dataclasses

    from edgeml.cli import main

    second = dataclasses.replace(served.publisher, model="pump2", work=tmp_path / "work")
    second.release(1)
    monkeypatch.setenv("EDGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGEML_STORE_URL", second.store.url)
    port = free_port()
    code = main(
        ["serve", "pump2", "--keyring", str(second.ring), "--grpc-port", str(port), "--num-cpus", "0.5"]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Ray Serve on this cluster already serves 'pump' at /: one model per Serve instance" in err
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
    assert httpx.get(f"{served.url}/v2/health/ready", timeout=30).json() == {"ready": True}
