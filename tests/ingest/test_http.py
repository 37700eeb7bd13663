"""HTTP sources against a real JSON API on 127.0.0.1: pagination, auth, retries, rate limit."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from edgeml.errors import ConfigError, UserError
from edgeml.ingest.http import fetch_records
from edgeml.ingest.lake import read_parts
from edgeml.ingest.run import ingest
from edgeml.settings import Settings
from edgeml.simulate.sensors import SensorSimulation, iter_records, simulate_sensors
from edgeml.spec import Spec
from edgeml.spec.models import HttpSource
from edgeml.store import store_from_settings

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    at: float


@dataclass
class Api:
    """A JSON API on 127.0.0.1 whose answers the test decides; it records every request."""

    url: str
    respond: Callable[[Seen], Reply] = lambda seen: (200, {}, b"[]")
    seen: list[Seen] = field(default_factory=list)

    def queries(self, name: str) -> list[str | None]:
        return [s.query.get(name) for s in self.seen]


def json_reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


@pytest.fixture
def api() -> Iterator[Api]:
    state: dict[str, Api] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's naming
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            seen = Seen(parts.path, query, {k.lower(): v for k, v in self.headers.items()}, time.monotonic())
            state["api"].seen.append(seen)
            status, headers, body = state["api"].respond(seen)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["api"] = Api(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state["api"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Sleeps:
    """A ``sleep`` that records delays (and when the caller would have woken) instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.wake_at: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.wake_at.append(time.monotonic() + seconds)

    def longer_than(self, seconds: float) -> list[float]:
        return [d for d in self.delays if d > seconds]


def source(url: str, **fields: Any) -> HttpSource:
    # A fast rate limit unless a test is about it, so that rate-limit sleeps are tiny.
    return HttpSource.model_validate(
        {"name": "api", "kind": "http", "url": url, "rate_limit_per_s": 1000, **fields}
    )


def fetch(src: HttpSource, sleep: Callable[[float], None] | None = None) -> list[list[dict[str, Any]]]:
    return list(fetch_records(src, sleep=sleep or Sleeps()))


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "v": i * 1.5} for i in range(start, start + n)]


# ---------------------------------------------------------------------------- pagination


def test_page_pagination_walks_until_an_empty_page(api: Api) -> None:
    data = records(25)

    def respond(seen: Seen) -> Reply:
        page, size = int(seen.query["page"]), int(seen.query["page_size"])
        return json_reply(data[(page - 1) * size : page * size])

    api.respond = respond
    # A query written in the url is kept alongside the params (httpx alone would drop it).
    pages = fetch(
        source(
            f"{api.url}/readings?site=plant-1",
            params={"region": "eu"},
            pagination={"kind": "page", "page_size": 10},
        )
    )
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    assert [r for p in pages for r in p] == data
    assert api.queries("page") == ["1", "2", "3", "4"]
    assert set(api.queries("page_size")) == {"10"}
    assert set(api.queries("site")) == {"plant-1"}
    assert set(api.queries("region")) == {"eu"}
    assert {s.path for s in api.seen} == {"/readings"}


def test_page_pagination_stops_at_max_pages(api: Api) -> None:
    api.respond = lambda seen: json_reply(records(2))
    pages = fetch(
        source(api.url, pagination={"kind": "page", "max_pages": 3, "page_param": "p", "size_param": None})
    )
    assert len(pages) == 3
    assert api.queries("p") == ["1", "2", "3"]
    assert api.queries("page_size") == [None] * 3


def test_cursor_pagination_follows_the_cursor_in_the_body(api: Api) -> None:
    chunks = {None: (records(3), "c1"), "c1": (records(3, 3), "c2"), "c2": (records(1, 6), None)}

    def respond(seen: Seen) -> Reply:
        recs, nxt = chunks[seen.query.get("after")]
        return json_reply({"data": {"readings": recs}, "meta": {"next": nxt}})

    api.respond = respond
    src = source(
        api.url,
        records_path="data.readings",
        pagination={"kind": "cursor", "cursor_param": "after", "cursor_path": "meta.next", "page_size": 3},
    )
    pages = fetch(src)
    assert [r["id"] for p in pages for r in p] == list(range(7))
    assert api.queries("after") == [None, "c1", "c2"]
    assert set(api.queries("page_size")) == {"3"}


def test_link_pagination_follows_rfc_8288_next_links(api: Api) -> None:
    def respond(seen: Seen) -> Reply:
        page = int(seen.query.get("p", "1"))
        links = {
            1: f'<{api.url}/items?p=2>; rel="next", <{api.url}/items?p=1>; rel="first"',
            2: '</items?p=3>; rel="next"',  # relative: resolved against the request URL
            3: "",
        }[page]
        return json_reply(records(2, 2 * (page - 1)), 200, {"Link": links} if links else None)

    api.respond = respond
    # Once re-requested the first page up to max_pages: the next link's query was dropped.
    pages = fetch(
        source(f"{api.url}/items", params={"site": "a"}, pagination={"kind": "link", "max_pages": 5})
    )
    assert [r["id"] for p in pages for r in p] == list(range(6))
    assert api.queries("p") == [None, "2", "3"]
    # The first request carries the fixed params; a next link is followed as given.
    assert api.queries("site") == ["a", None, None]


def test_records_path_and_non_object_records(api: Api) -> None:
    api.respond = lambda seen: json_reply({"result": {"items": [1, "two", {"id": 3}]}})
    assert fetch(source(api.url, records_path="result.items")) == [
        [{"value": 1}, {"value": "two"}, {"id": 3}]
    ]


def test_no_list_at_records_path_is_a_user_error(api: Api) -> None:
    api.respond = lambda seen: json_reply({"result": {"items": {"id": 1}}})
    with pytest.raises(UserError, match=r"source 'api': no list of records at result.items of the response"):
        fetch(source(api.url, records_path="result.items"))
    with pytest.raises(UserError, match=r"no list of records at the top level"):
        fetch(source(api.url))


# -------------------------------------------------------------------------------- auth


def test_the_token_is_sent_from_its_environment_variable(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CM_API_TOKEN", "s3cret-token")
    api.respond = lambda seen: json_reply([{"id": 1}])
    fetch(source(api.url, auth={"token_env": "CM_API_TOKEN"}, headers={"Accept": "application/json"}))
    fetch(source(api.url, auth={"token_env": "CM_API_TOKEN", "header": "X-Api-Key", "scheme": None}))
    first, second = api.seen
    assert first.headers["authorization"] == "Bearer s3cret-token"
    assert first.headers["accept"] == "application/json"
    assert second.headers["x-api-key"] == "s3cret-token"
    assert "authorization" not in second.headers


def test_a_missing_token_variable_is_a_config_error(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CM_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"source 'api' needs the environment variable CM_API_TOKEN"):
        fetch(source(api.url, auth={"token_env": "CM_API_TOKEN"}))
    assert api.seen == []


@pytest.mark.parametrize("status", [401, 403])
def test_not_authorised_mentions_the_token_variable_and_is_not_retried(
    api: Api, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("CM_API_TOKEN", "wrong")
    api.respond = lambda seen: json_reply({"error": "bad token"}, status)
    with pytest.raises(UserError, match=rf"answered HTTP {status} \(not authorised\)") as info:
        fetch(source(api.url, auth={"token_env": "CM_API_TOKEN"}))
    assert info.value.hint == "check the token in CM_API_TOKEN"
    assert "CM_API_TOKEN" in str(info.value)
    assert len(api.seen) == 1


def test_not_authorised_without_auth_says_to_set_it(api: Api) -> None:
    api.respond = lambda seen: json_reply({}, 401)
    with pytest.raises(UserError) as info:
        fetch(source(api.url))
    assert "auth.token_env" in (info.value.hint or "")


# ----------------------------------------------------------------------------- retries


def test_429_and_503_are_retried_honouring_retry_after(api: Api) -> None:
    replies = iter([json_reply({}, 429, {"Retry-After": "2"}), json_reply({}, 503), json_reply([{"id": 1}])])
    api.respond = lambda seen: next(replies)
    sleeps = Sleeps()
    pages = fetch(source(api.url, backoff_s=0.5), sleep=sleeps)
    assert pages == [[{"id": 1}]]
    assert len(api.seen) == 3
    waits = sleeps.longer_than(0.01)  # rate-limit waits at 1000/s are at most 1 ms
    assert len(waits) == 2
    assert waits[0] == 2.0  # Retry-After, as the server asked
    assert 0.5 <= waits[1] <= 1.0  # second attempt: 0.5 s * 2, with jitter down to half


def test_fractional_retry_after_and_backoff_doubling(api: Api) -> None:
    replies = iter(
        [
            json_reply({}, 429, {"Retry-After": "0.25"}),
            json_reply({}, 500),
            json_reply({}, 502),
            json_reply([]),
        ]
    )
    api.respond = lambda seen: next(replies)
    sleeps = Sleeps()
    fetch(source(api.url, backoff_s=0.1, retries=3), sleep=sleeps)
    waits = sleeps.longer_than(0.01)
    assert waits[0] == 0.25
    assert 0.1 <= waits[1] <= 0.2
    assert 0.2 <= waits[2] <= 0.4


def test_retries_exhausted_is_a_user_error(api: Api) -> None:
    api.respond = lambda seen: json_reply({}, 503)
    with pytest.raises(UserError, match=r"source 'api': .* still answered HTTP 503 after 3 attempt\(s\)"):
        fetch(source(api.url, retries=2))
    assert len(api.seen) == 3


def test_a_client_error_is_reported_with_the_body_and_not_retried(api: Api) -> None:
    api.respond = lambda seen: (404, {"Content-Type": "text/plain"}, b"no such endpoint")
    with pytest.raises(UserError, match=r"answered HTTP 404: no such endpoint"):
        fetch(source(api.url))
    assert len(api.seen) == 1


def test_a_body_that_is_not_json_is_a_user_error(api: Api) -> None:
    api.respond = lambda seen: (200, {"Content-Type": "text/html"}, b"<html>maintenance</html>")
    with pytest.raises(UserError, match=r"source 'api': http://127\.0\.0\.1:\d+ did not return JSON"):
        fetch(source(api.url))


def test_rate_limit_spaces_requests(api: Api) -> None:
    api.respond = lambda seen: json_reply(records(1) if int(seen.query["page"]) <= 5 else [])
    sleeps = Sleeps()
    src = source(api.url, rate_limit_per_s=5, pagination={"kind": "page"})
    started = time.monotonic()  # the first request goes at or after this
    fetch(src, sleep=sleeps)
    assert len(api.seen) == 6
    # No wait before the first request, one before each later one. The fake sleep returns at
    # once, so each later request's slot is when the client would have woken (now + delay):
    # 1/5 s after the previous one.
    assert len(sleeps.delays) == 5
    assert all(d > 0 for d in sleeps.delays)
    slots = [started, *sleeps.wake_at]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(gap >= 0.2 - 1e-3 for gap in gaps), gaps


def test_an_unreachable_port_is_a_user_error_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens there any more
    sleeps = Sleeps()
    with pytest.raises(
        UserError, match=rf"cannot reach http://127\.0\.0\.1:{port}/x after 3 attempt\(s\): Connect"
    ):
        fetch(source(f"http://127.0.0.1:{port}/x", retries=2, backoff_s=0.1), sleep=sleeps)
    assert len(sleeps.longer_than(0.01)) == 2


# ------------------------------------------------------------------------ ingest end to end

HTTP_SCHEMA = """\
schema:
  timestamp: ts
  entity: machine_id
  columns:
    msg_id: {type: string, nullable: false}
    ts: {type: timestamp, nullable: false}
    machine_id: {type: string, nullable: false}
    temperature: {type: float}
    vibration: {type: float}
    rpm: {type: float}
    is_anomaly: {type: bool}
"""


@pytest.mark.usefixtures("ray_local")
def test_ingest_an_http_source(
    api: Api,
    tmp_path: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    make_spec: Callable[..., Spec],
) -> None:
    rows = list(iter_records(simulate_sensors(SensorSimulation(machines=2, readings=120))))
    rows[3]["temperature"] = "hot"  # a bad value among numbers: quarantined, not a crash
    rows[4]["ts"] = "soon"
    del rows[5]["vibration"]  # a nullable field left out: null
    rows[6]["extra"] = {"nested": [1, 2]}
    monkeypatch.setenv("CM_API_TOKEN", "tok")

    def respond(seen: Seen) -> Reply:
        if seen.headers.get("authorization") != "Bearer tok":
            return json_reply({}, 401)
        start = int(seen.query.get("after") or 0)
        size = int(seen.query["page_size"])
        nxt = start + size if start + size < len(rows) else None
        return json_reply({"data": rows[start : start + size], "next": nxt})

    api.respond = respond
    spec = make_spec(
        tmp_path,
        f"{{name: vibration-api, kind: http, url: '{api.url}/readings', rate_limit_per_s: 200, "
        "records_path: data, auth: {token_env: CM_API_TOKEN}, "
        "pagination: {kind: cursor, cursor_param: after, cursor_path: next, page_size: 100}}",
        schema=HTTP_SCHEMA,
    )
    report = ingest(spec, settings, progress_bars=False)
    (src,) = report.sources
    assert len(api.seen) == 3
    assert (src.kind, src.rows_in, src.rows_clean, src.rows_quarantined) == ("http", 240, 238, 2)
    assert src.problems == {"temperature: not a number": 1, "ts: not an ISO 8601 timestamp": 1}
    assert src.ignored_columns == {"pressure", "power_kw", "fault", "extra"}
    assert report.snapshot.rows == 238
    table = read_parts(store_from_settings(settings), report.snapshot.parts, spec.schema_)
    by_id = {r["msg_id"]: r for r in table.to_pylist()}
    assert by_id[rows[5]["msg_id"]]["vibration"] is None
    assert by_id[rows[0]["msg_id"]]["temperature"] == rows[0]["temperature"]
    assert by_id[rows[0]["msg_id"]]["ts"].isoformat() == "2026-01-05T00:00:00+00:00"
    quarantined = read_parts(store_from_settings(settings), src.quarantine)
    assert sorted(quarantined.column("reason").to_pylist()) == [
        "temperature: not a number (hot)",
        "ts: not an ISO 8601 timestamp (soon)",
    ]


@pytest.mark.usefixtures("ray_local")
def test_ingest_an_http_source_with_no_records(
    api: Api, tmp_path: Path, settings: Settings, make_spec: Callable[..., Spec]
) -> None:
    api.respond = lambda seen: json_reply([])
    spec = make_spec(
        tmp_path, f"{{name: api, kind: http, url: '{api.url}', rate_limit_per_s: 100}}", schema=HTTP_SCHEMA
    )
    report = ingest(spec, settings, progress_bars=False)
    (src,) = report.sources
    assert (src.rows_in, src.rows_clean, src.parts) == (0, 0, [])
    assert report.snapshot.rows == 0
