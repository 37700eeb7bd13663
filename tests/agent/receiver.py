"""A stand-in for the central node's telemetry endpoint: a real HTTP server on 127.0.0.1.

It answers from a script (status, headers, whether the batch was stored before answering),
then 200, records every request, and keeps one copy per batch_id as the central node does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import ValidationError

from edgeml.telemetry.schema import TelemetryBatch


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stored: bool = False  # a failure after the batch was stored: the device will send it again


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic()
    path: str
    authorization: str | None
    batch_id: str | None
    status: int


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.script: deque[Reply] = deque()
        self.hits: list[Hit] = []
        self.stored: dict[str, TelemetryBatch] = {}
        self.deliveries: dict[str, int] = {}  # batch_id -> times stored or found already stored
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _receive(
        self, path: str, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            batch = TelemetryBatch.model_validate_json(body)
        except ValidationError as exc:
            return 422, {}, json.dumps({"detail": str(exc)}).encode()
        with self._lock:
            reply = self.script.popleft() if self.script else Reply()
            if path != "/v1/telemetry":
                reply = Reply(404)
            if reply.status < 300 or reply.stored:
                self.stored.setdefault(batch.batch_id, batch)  # idempotent on batch_id
                self.deliveries[batch.batch_id] = self.deliveries.get(batch.batch_id, 0) + 1
            self.hits.append(Hit(time.monotonic(), path, authorization, batch.batch_id, reply.status))
        text = "accepted" if reply.status < 300 else f"refused with {reply.status}"
        return reply.status, reply.headers, json.dumps({"detail": text}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, headers, payload = receiver._receive(
                    self.path, self.headers.get("Authorization"), body
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the test reads Receiver.hits

        return Handler
