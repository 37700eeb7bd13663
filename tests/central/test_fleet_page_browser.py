"""The fleet page in headless Chromium: devices and charts render, with no console error.

A real central node on uvicorn gets devices in two groups, telemetry batches over the last
hours and feedback labels through its HTTP API; Chromium (the distribution's, driven by the
Python ``playwright`` package over its DevTools pipe) loads ``/`` and the test reads the DOM
as drawn: table cells, SVG shapes and their geometry, console messages, failed requests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, Response, sync_playwright

from agent.conftest import Publisher, with_golden
from bundle.conftest import make_manifest, write_model
from edgeml.bundle.build import publish_bundle
from edgeml.bundle.manifest import Histogram
from edgeml.telemetry.schema import CalibratedSums, FeatureTelemetry
from telemetry.batches import make_batch

from .conftest import ADMIN, Central, bearer, make_config, running

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary: `apt-get install -y chromium` (`make os-deps` does it)"
)

# Flags seen working on these machines (shared RECIPES.md): headless as root, and no background
# traffic (on a closed network it shows up as refused connections).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

HOURS_AGO = (5, 3, 1, 0)  # one batch per device in each of these hours: several points per chart
ACCURACY = {5: 0.9, 3: 0.85, 1: 0.8, 0: 0.75}  # calibrated expected accuracy of each hour's batches

# Every shape of every SVG chart with its box in the SVG's own units, and the SVG's size on screen.
SHAPES_JS = """
() => [...document.querySelectorAll("svg")].map(svg => {
  const box = svg.viewBox.baseVal, screen = svg.getBoundingClientRect();
  return {
    caption: svg.closest("figure")?.querySelector("figcaption")?.textContent ?? "",
    section: svg.closest("section")?.id ?? "",
    view: [box.x, box.y, box.width, box.height],
    screen: [screen.width, screen.height],
    shapes: [...svg.querySelectorAll("rect, circle, polyline")].map(el => {
      const b = el.getBBox();
      return {kind: el.tagName + "." + el.getAttribute("class"), box: [b.x, b.y, b.width, b.height],
              points: el.tagName === "polyline" ? el.points.numberOfItems : null,
              shown: getComputedStyle(el).display !== "none" && getComputedStyle(el).visibility !== "hidden"};
    }),
  };
})
"""


def publish(publisher: Publisher, version: int) -> None:
    """A signed pump bundle with a reference of 3,000 rows (the test model's 3 rows flag no drift at all)."""
    folder = publisher.work / f"build-{version}"
    files = write_model(folder, version)
    manifest = make_manifest(files, version)
    reference = manifest.reference.model_copy(
        update={
            "rows": 3000,
            "features": {
                "a": Histogram(edges=[0.0], counts=[1000, 2000]),
                "b": Histogram(edges=[0.0], counts=[2000, 1000]),
            },
        }
    )
    manifest = manifest.model_copy(update={"reference": reference})
    publish_bundle(publisher.store, publisher.signer, with_golden(manifest, folder), folder)


def features(rows: int, drifted: bool) -> dict[str, FeatureTelemetry]:
    """Inputs like the test model's reference (a: 1/3 below 0, b: 2/3 below 0), or all shifted."""
    third = rows // 3
    if drifted:
        return {
            "a": FeatureTelemetry(edges=[0.0], counts=[rows, 0]),
            "b": FeatureTelemetry(edges=[0.0], counts=[0, rows]),
        }
    return {
        "a": FeatureTelemetry(edges=[0.0], counts=[third, rows - third]),
        "b": FeatureTelemetry(edges=[0.0], counts=[rows - third, third]),
    }


def within_one_hour() -> datetime:
    """Now, at least 5 s past and 20 s before a full hour (else after a short wait).

    The page pools telemetry in hourly windows aligned on the epoch, and counts a label in the
    window it arrived in: the newest batches and the labels must land in the same hour.
    """
    now = datetime.now(UTC)
    into = now.minute * 60 + now.second + now.microsecond / 1e6
    if into < 5 or into > 3600 - 20:
        time.sleep((3600 + 5 - into) % 3600)
        now = datetime.now(UTC)
    return now


def feed(central: Central, publisher: Publisher) -> None:
    """Devices in two groups (and one without), telemetry over the last hours, feedback labels."""
    for version in (1, 2):
        publish(publisher, version)
    tokens = {
        "press-a1": central.register("press-a1", group="line-a"),
        "press-a2": central.register("press-a2", group="line-a"),
        "pump-b1": central.register("pump-b1", group="line-b"),
    }
    central.register("pump-b2", group="line-b")  # registered, never heard from: offline
    central.register("spare-1")  # no group
    central.register("retired-1", group="line-a")
    assert central.client.post("/v1/devices/retired-1/decommission", headers=bearer(ADMIN)).is_success

    now = within_one_hour()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    for device, token in tokens.items():
        group = "line-b" if device.startswith("pump") else "line-a"
        for hours in HOURS_AGO:
            rows = 300 if group == "line-a" else 120 + 40 * hours
            end = now - timedelta(hours=hours)
            start = end - timedelta(minutes=1)
            if hours == 0:
                start = max(start, this_hour)  # the newest windows share the labels' hour
            batch = make_batch(device, group=group, rows=rows, window_end=end)
            accuracy = ACCURACY[hours]
            batch = batch.model_copy(
                update={
                    "window_start": start,
                    "features": features(rows, drifted=group == "line-b"),
                    "calibration": CalibratedSums(
                        sums={"ok": rows * 0.7, "fault": rows * 0.3},
                        expected_correct=rows * accuracy,
                        rows=rows,
                    ),
                }
            )
            answer = central.post(batch, token)
            assert answer.is_success, answer.text

    # press-a2 moved to v2 just now: one window of v2 so far (its chart has a single point)
    newest = make_batch("press-a2", group="line-a", version=2, rows=300, window_end=now)
    newest = newest.model_copy(update={"window_start": this_hour, "features": features(300, drifted=False)})
    assert central.post(newest, tokens["press-a2"]).is_success

    def labels(prefix: str, total: int, wrong: int) -> dict[str, Any]:
        return {
            "labels": [
                {
                    "prediction_id": f"{prefix}-{i}",
                    "label": "ok",
                    "predicted": "fault" if i < wrong else "ok",
                    "model": "pump",
                    "version": 1,
                }
                for i in range(total)
            ]
        }

    for token, body in ((tokens["press-a1"], labels("a", 8, 2)), (tokens["pump-b1"], labels("b", 4, 2))):
        answer = central.client.post("/v1/feedback", json=body, headers=bearer(token))
        assert answer.json()["accepted"] == len(body["labels"])


class Browser:
    """A headless Chromium page that records what went wrong while it loaded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning", "assert"):
            self.console.append(f"{message.type}: {message.text} ({message.location})")

    def _failed(self, request: Request) -> None:
        self.failed.append(f"{request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.failed.append(f"{response.url}: HTTP {response.status}")


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS, timeout=30_000)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            yield Browser(context.new_page())
            context.close()
        finally:
            chromium.close()


def test_the_fleet_page_renders_in_chromium(browser: Browser, publisher: Publisher, tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "central", store={"url": publisher.store.url}, keyring=str(publisher.ring)
    )
    with running(config) as central:
        feed(central, publisher)
        url = str(central.client.base_url).rstrip("/")
        answer = browser.page.goto(url + "/", wait_until="load")
        assert answer is not None
        assert answer.status == 200
        page = browser.page
        page.wait_for_load_state("networkidle")

        assert page.title() == "edgeml fleet"
        devices = page.eval_on_selector_all(
            "#devices tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))",
        )
        by_id = {row[0]: row for row in devices}
        assert set(by_id) == {"press-a1", "press-a2", "pump-b1", "pump-b2", "spare-1", "retired-1"}
        assert by_id["press-a1"][1:4] == ["line-a", "x86-64-generic", "pump v1"]
        assert by_id["press-a2"][3] == "pump v2"
        assert by_id["press-a1"][6] == "online"
        assert by_id["pump-b2"][6] == "offline"
        assert by_id["retired-1"][6] == "decommissioned"
        assert by_id["spare-1"][1] == "—"
        for device_id in by_id:  # drawn, not only in the markup
            assert page.locator("#devices").get_by_role("cell", name=device_id, exact=True).is_visible()
        audit = page.eval_on_selector_all(
            "#audit tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
        )  # the latest changes, newest first: the registrations and the decommission
        assert audit[0][3:5] == ["device.decommission", "retired-1"]
        assert {row[4] for row in audit} >= set(by_id)
        assert page.locator("#audit").is_visible()

        health = page.eval_on_selector_all(
            "#model-health-table tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))",
        )
        by_series = {row[0]: row for row in health}
        assert set(by_series) == {"pump v1 · line-a", "pump v1 · line-b", "pump v2 · line-a"}
        calm, drifted = by_series["pump v1 · line-a"], by_series["pump v1 · line-b"]
        assert calm[3].startswith("no drift")
        assert "drifted" in drifted[3]
        assert page.locator("#model-health .breach").first.is_visible()
        assert (calm[4], drifted[4]) == ("75.0%", "75.0%")  # the newest window's estimate
        assert (calm[6], drifted[6]) == ("75.0%", "50.0%")  # realized from the labels
        assert by_series["pump v2 · line-a"][3].startswith("no drift")

        charts = page.evaluate(SHAPES_JS)
        rows_charts = [c for c in charts if c["section"] == ""]
        accuracy_charts = [c for c in charts if c["section"] == "model-health"]
        assert [c["caption"].split(" ·")[0] for c in rows_charts] == ["line-a", "line-b"]
        captions = [c["caption"] for c in accuracy_charts]
        assert captions == ["pump v1 · line-a", "pump v1 · line-b", "pump v2 · line-a"]
        for chart in charts:
            _, _, width, height = chart["view"]
            assert chart["screen"] == [width, height], chart["caption"]  # laid out at its size
            for shape in chart["shapes"]:  # every shape inside the chart: none clipped away
                x, y, w, h = shape["box"]
                assert shape["shown"], (chart["caption"], shape)
                where = (chart["caption"], shape)
                assert x >= 0, where
                assert x + w <= width, where
                assert y >= 0, where
                assert y + h <= height, where
        for chart in rows_charts:
            bars = [s for s in chart["shapes"] if s["kind"] == "rect.bar"]
            assert len(bars) == len(HOURS_AGO), chart["caption"]  # one bar per hour with telemetry
            assert all(s["box"][3] > 0 for s in bars)
        *history, newest = accuracy_charts
        marks = [s for s in newest["shapes"] if s["kind"] == "circle.estimated"]
        assert len(marks) == 1  # v2's only window: a dot where a line of one point draws nothing
        assert marks[0]["box"][2] > 0
        for chart in history:
            kinds = [s["kind"] for s in chart["shapes"]]
            line = next(s for s in chart["shapes"] if s["kind"] == "polyline.estimated")
            assert line["points"] == len(HOURS_AGO)
            assert line["box"][2] > 0  # a line, not a point
            assert line["box"][3] > 0  # the estimates vary
            assert kinds.count("circle.estimated") == len(HOURS_AGO), chart["caption"]
            assert kinds.count("circle.realized") == 1, chart["caption"]  # labels arrived in one window

        shot = page.screenshot(path=tmp_path / "fleet.png", full_page=True)
        assert shot.startswith(b"\x89PNG\r\n\x1a\n")
        assert (tmp_path / "fleet.png").read_bytes() == shot
        assert len(shot) > 10_000

    assert browser.console == []
    assert browser.errors == []
    assert browser.failed == []
    assert all(r.startswith(url) for r in browser.requests), browser.requests  # nothing from elsewhere


def test_the_browser_harness_records_console_errors_page_errors_and_failed_requests(
    browser: Browser,
) -> None:
    """The checks above are only worth something if a broken page would fail them."""
    broken = (
        "<!DOCTYPE html><title>broken</title>"
        '<img src="http://127.0.0.1:9/missing.png" alt="">'
        "<script>console.error('drawn wrong'); undefinedFunction();</script>"
    )
    browser.page.set_content(broken, wait_until="load")
    assert any("drawn wrong" in m for m in browser.console), browser.console
    assert any("undefinedFunction" in e for e in browser.errors), browser.errors
    assert any("127.0.0.1:9/missing.png" in f for f in browser.failed), browser.failed
