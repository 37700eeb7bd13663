"""Errors a user can cause with an S3 store: each is a clear edgeml error, never an SDK one.

Every error here is a :class:`UserError` (the CLI exits 2 with one message) that keeps the
SDK or network exception as ``__cause__``, so ``--debug`` shows the whole chain.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from edgeml.cli import main
from edgeml.errors import (
    BucketNotFoundError,
    EdgemlError,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreUnreachableError,
    UserError,
)
from edgeml.store import open_store
from edgeml.store.s3 import S3Store

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_user_error(exc: EdgemlError) -> None:
    assert isinstance(exc, UserError)
    assert exc.exit_code == 2
    assert exc.__cause__ is not None, "the SDK or network error is kept as __cause__"


class NotS3Server:
    """A plain web server on 127.0.0.1 that answers every request with an HTML page."""

    PAGE = (
        b"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Router admin</title></head>"
        b"<body><p>Welcome<br></body></html>\n"
    )

    def __init__(self, status: int) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(outer.PAGE)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(outer.PAGE)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> NotS3Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(params=[200, 404], ids=["html-200", "html-404"])
def not_s3(request: pytest.FixtureRequest) -> Iterator[NotS3Server]:
    with NotS3Server(request.param) as server:
        yield server


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def unique_prefix() -> str:
    return f"errors/{uuid.uuid4().hex}"


# --- unreachable ---------------------------------------------------------------------


def test_unreachable_endpoint_fails_fast_with_the_endpoint_named(s3_server: Any) -> None:
    port = closed_port()
    store = S3Store("edgeml", s3_server.settings(endpoint=f"127.0.0.1:{port}", retries=0, timeout_s=2))
    start = time.monotonic()
    with pytest.raises(StoreUnreachableError) as info:
        store.stat("some/key")
    assert time.monotonic() - start < 5
    assert f"http://127.0.0.1:{port}" in info.value.message
    assert "EDGEML_S3_ENDPOINT" in (info.value.hint or "")
    assert_user_error(info.value)


def test_endpoint_that_never_answers_times_out(s3_server: Any, hanging_port: int) -> None:
    store = S3Store(
        "edgeml", s3_server.settings(endpoint=f"127.0.0.1:{hanging_port}", retries=0, timeout_s=1)
    )
    start = time.monotonic()
    with pytest.raises(StoreUnreachableError, match=f"127.0.0.1:{hanging_port}") as info:
        store.keys()
    assert time.monotonic() - start < 5, "timeout_s bounds a request to a silent server"
    assert_user_error(info.value)


def test_opening_does_no_network_io(s3_server: Any) -> None:
    settings = s3_server.settings(endpoint=f"127.0.0.1:{closed_port()}", retries=0, timeout_s=2)
    store = open_store("s3://edgeml/some/prefix", settings)  # must not raise
    assert isinstance(store, S3Store)
    assert store.url == "s3://edgeml/some/prefix"
    with pytest.raises(StoreUnreachableError):
        store.keys()


def test_opening_sends_no_request_and_the_first_operation_does(s3_server: Any) -> None:
    with NotS3Server(404) as server:
        store = S3Store("edgeml", s3_server.settings(endpoint=server.endpoint, retries=0, timeout_s=2))
        assert server.requests == []
        with pytest.raises(StoreConfigError):
            store.exists("k")
        assert server.requests, "the first operation talks to the server"


# --- credentials and buckets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"secret_key": "not-the-secret"}, "SignatureDoesNotMatch"),
        ({"access_key": "AKIANOBODY"}, "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-access-key"],
)
def test_wrong_credentials_are_access_denied(s3_server: Any, override: dict[str, str], code: str) -> None:
    prefix = unique_prefix()
    store = S3Store(s3_server.bucket, s3_server.settings(**override), prefix=prefix)
    with pytest.raises(StoreAccessDeniedError) as info:
        store.put("k", b"must not land")
    assert code in info.value.message
    assert repr(s3_server.bucket) in info.value.message
    assert "EDGEML_S3_SECRET_KEY" in (info.value.hint or "")
    assert_user_error(info.value)
    good = S3Store(s3_server.bucket, s3_server.settings(), prefix=prefix)
    assert good.keys() == []


def test_missing_bucket_is_named(s3_server: Any) -> None:
    store = S3Store("missing-bucket", s3_server.settings())
    with pytest.raises(BucketNotFoundError) as info:
        store.keys()
    assert "'missing-bucket' does not exist" in info.value.message
    assert s3_server.endpoint in info.value.message
    assert_user_error(info.value)


@pytest.mark.parametrize("bucket", ["ab", "x" * 64, "-starts-with-dash", "a..b", "192.168.1.1", "has space"])
def test_invalid_bucket_name_is_a_config_error_at_open(s3_server: Any, bucket: str) -> None:
    with pytest.raises(StoreConfigError, match="not a valid S3 bucket name") as info:
        open_store(f"s3://{bucket}/x", s3_server.settings())
    assert bucket in info.value.message
    assert_user_error(info.value)


# --- wrong endpoints -----------------------------------------------------------------


def test_web_server_that_is_not_s3(s3_server: Any, not_s3: NotS3Server) -> None:
    store = S3Store("edgeml", s3_server.settings(endpoint=not_s3.endpoint, retries=0, timeout_s=2))
    for operation in (lambda: store.put("k", b"data"), store.keys, lambda: store.stat("k")):
        with pytest.raises(StoreConfigError) as info:
            operation()
        assert not isinstance(info.value, BucketNotFoundError), "a web page is not a missing bucket"
        assert f"http://{not_s3.endpoint} did not answer like an S3 server" in info.value.message
        assert_user_error(info.value)
    assert not any(r.startswith("PUT") for r in not_s3.requests), "nothing is 'uploaded' to it"


@pytest.mark.parametrize("endpoint", ["ftp://x", "s3://host:9000", "http://"])
def test_malformed_endpoint(s3_server: Any, endpoint: str) -> None:
    with pytest.raises(StoreConfigError, match="must be host:port or http") as info:
        S3Store("edgeml", s3_server.settings(endpoint=endpoint))
    assert endpoint in info.value.message
    assert info.value.exit_code == 2


def test_store_url_without_bucket(s3_server: Any) -> None:
    with pytest.raises(StoreConfigError, match="must name a bucket"):
        open_store("s3:///prefix", s3_server.settings())


# --- the CLI -------------------------------------------------------------------------


@pytest.fixture
def missing_bucket_env(s3_server: Any, clean_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEML_STORE_URL", "s3://missing-bucket")
    monkeypatch.setenv("EDGEML_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("EDGEML_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("EDGEML_S3_SECRET_KEY", s3_server.secret_key)
    monkeypatch.setenv("EDGEML_S3_SECURE", "false")


@pytest.mark.usefixtures("missing_bucket_env")
def test_cli_reports_missing_bucket_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "ls"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # undo the console's line wrapping
    assert "error: bucket 'missing-bucket' does not exist" in err
    assert "hint:" in err
    assert "Traceback" not in err


@pytest.mark.usefixtures("missing_bucket_env")
def test_cli_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "store", "ls"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "BucketNotFoundError" in err
    assert "S3Error" in err, "the SDK cause is part of the chain"
    assert "bucket 'missing-bucket' does not exist" in " ".join(err.split())
