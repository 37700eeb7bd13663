"""The agent's HTTP server against slow and stalled uploads, with raw sockets on a running agent:
a stalled body is answered 408 and closed within the timeout, uploads waiting at once are capped
(one more is 503 at once, while whole requests go on), and a client that goes away mid-body is
one debug line, not a traceback."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from .conftest import DeviceConfig, Publisher
from .live import live_agent

pytestmark = pytest.mark.slow

TIMEOUT_S = 2.0
HEAD = (
    b"POST /predict HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
)


def stalled_upload(address: tuple[str, int]) -> socket.socket:
    """Headers and ten bytes of a 1,000-byte body, then nothing."""
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(HEAD + b'{"a": 1.0,')
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def guarded(device_config: DeviceConfig) -> object:
    return device_config(http={"port": 0, "body_timeout_s": TIMEOUT_S, "max_slow_uploads": 4})


def test_a_stalled_upload_is_answered_408_and_closed_within_the_timeout(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    with live_agent(guarded(device_config)) as (_, http):  # type: ignore[arg-type]
        wait_for(lambda: http.get("/agent/status").json()["version"] == 1)
        address = http.base_url.host, http.base_url.port
        start = time.monotonic()
        answer = read_to_close(stalled_upload(address))  # type: ignore[arg-type]
        waited = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b'"field":"body"' in answer
        assert TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 4  # closed by the server, not by our recv timeout


def test_uploads_waiting_at_once_are_capped_and_whole_requests_go_on(
    publisher: Publisher, device_config: DeviceConfig
) -> None:
    publisher.release(1)
    with live_agent(guarded(device_config)) as (agent, http):  # type: ignore[arg-type]
        wait_for(lambda: http.get("/agent/status").json()["version"] == 1)
        address = http.base_url.host, http.base_url.port
        held = [stalled_upload(address) for _ in range(4)]  # type: ignore[arg-type]
        wait_for(lambda: agent.server_guard.waiting == 4)
        start = time.monotonic()
        refused = read_to_close(stalled_upload(address))  # type: ignore[arg-type]
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in refused.lower()
        assert time.monotonic() - start < TIMEOUT_S  # at once, not after the deadline
        assert http.post("/predict", json={"a": 1.0, "b": 2.0}).status_code == 200
        assert all(read_to_close(s).startswith(b"HTTP/1.1 408 ") for s in held)
        assert agent.server_guard.waiting == 0
        assert http.post("/predict", json={"a": 1.0, "b": 2.0}).status_code == 200


def test_a_client_gone_mid_body_is_one_debug_line(
    publisher: Publisher, device_config: DeviceConfig, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.release(1)
    with live_agent(guarded(device_config)) as (agent, http):  # type: ignore[arg-type]
        wait_for(lambda: http.get("/agent/status").json()["version"] == 1)
        address = http.base_url.host, http.base_url.port
        with caplog.at_level(logging.DEBUG):
            stalled_upload(address).close()  # type: ignore[arg-type]
            wait_for(lambda: agent.server_guard.waiting == 0)
            time.sleep(0.2)
        gone = [r for r in caplog.records if "went away" in r.getMessage()]
        assert len(gone) == 1
        assert gone[0].levelno == logging.DEBUG
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
