"""Pull records from a paginated JSON API: auth header, rate limit, retries with backoff.

Pages are fetched in order by the driver (a cursor or ``Link`` header makes each page
depend on the one before); the records then go through the same Ray Data landing
path as every other bounded source.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from edgeml.errors import SourceUnavailableError, UserError
from edgeml.settings import read_secret
from edgeml.spec.models import HttpSource

__all__ = ["fetch_records"]

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _dig(body: Any, path: str | None) -> Any:
    if not path:
        return body
    for part in path.split("."):
        if not isinstance(body, dict) or part not in body:
            return None
        body = body[part]
    return body


class _RateLimiter:
    def __init__(self, per_second: float, sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / per_second
        self.next_at = 0.0
        self.sleep = sleep

    def wait(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


def _get(
    client: httpx.Client,
    source: HttpSource,
    url: str,
    params: dict[str, Any],
    limiter: _RateLimiter,
    sleep: Callable[[float], None],
) -> httpx.Response:
    what = f"source {source.name!r}"
    # Merged into the URL's own query: httpx's `params=` would replace it (and with it a
    # next link's query, or a query written in the spec's url).
    target = httpx.URL(url).copy_merge_params(params)
    for attempt in range(source.retries + 1):
        limiter.wait()
        try:
            response = client.get(target)
        except httpx.TransportError as exc:
            if attempt == source.retries:
                raise SourceUnavailableError(
                    f"{what}: cannot reach {url} after {attempt + 1} attempt(s): {type(exc).__name__}"
                ) from exc
            delay = None
        else:
            if response.status_code in (401, 403):
                env = source.auth.token_env if source.auth else None
                raise UserError(
                    f"{what}: {url} answered HTTP {response.status_code} (not authorised)",
                    hint=f"check the token in {env}" if env else "the API needs auth: set auth.token_env",
                )
            if response.status_code not in _RETRY_STATUS:
                if response.is_error:
                    raise UserError(
                        f"{what}: {url} answered HTTP {response.status_code}: {response.text[:200]}"
                    )
                return response
            if attempt == source.retries:
                raise SourceUnavailableError(
                    f"{what}: {url} still answered HTTP {response.status_code} after {attempt + 1} attempt(s)"
                )
            retry_after = response.headers.get("Retry-After", "")
            delay = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
        backoff = source.backoff_s * 2**attempt
        sleep(delay if delay is not None else backoff * (0.5 + random.random() / 2))  # noqa: S311 - jitter
    raise AssertionError("unreachable")


def fetch_records(
    source: HttpSource,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[dict[str, Any]]]:
    """Yield each page's records. ``transport`` lets tests and proxies plug in."""
    headers = dict(source.headers)
    if source.auth is not None:
        token = read_secret(source.auth.token_env, purpose=f"source {source.name!r}")
        headers[source.auth.header] = f"{source.auth.scheme} {token}" if source.auth.scheme else token
    pager = source.pagination
    limiter = _RateLimiter(source.rate_limit_per_s, sleep)
    url: str | None = source.url
    params: dict[str, Any] = dict(source.params)
    if pager.kind in ("page", "cursor") and pager.size_param:
        params[pager.size_param] = pager.page_size
    page = 1
    with httpx.Client(
        headers=headers, timeout=source.timeout_s, transport=transport, follow_redirects=True
    ) as client:
        for _ in range(pager.max_pages):
            if pager.kind == "page":
                params[pager.page_param] = page
            assert url is not None
            response = _get(client, source, url, params, limiter, sleep)
            try:
                body = response.json()
            except ValueError as exc:
                raise UserError(f"source {source.name!r}: {url} did not return JSON") from exc
            records = _dig(body, source.records_path)
            if not isinstance(records, list):
                raise UserError(
                    f"source {source.name!r}: no list of records at "
                    f"{source.records_path or 'the top level'} of the response from {url}"
                )
            yield [r if isinstance(r, dict) else {"value": r} for r in records]
            if pager.kind == "none" or (not records and pager.kind == "page"):
                return
            if pager.kind == "page":
                page += 1
            elif pager.kind == "cursor":
                cursor = _dig(body, pager.cursor_path)
                if not cursor:
                    return
                params[pager.cursor_param] = cursor
            else:
                nxt = response.links.get("next", {}).get("url")
                if not nxt:
                    return
                url, params = str(response.url.join(nxt)), {}
