"""The fleet as JSON, as a page, and as Prometheus gauges; feedback labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.conftest import Publisher
from edgeml.central.services.fleet import model_health
from edgeml.telemetry.schema import FeatureTelemetry
from telemetry.batches import make_batch

from .conftest import ADMIN, Central, bearer, make_config, running


def scrape(central: Central) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = central.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


class _Page(HTMLParser):
    """Collects table cells and counts SVG charts; fails on a closing tag that closes nothing open."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "rect", "line"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.cells: list[str] = []
        self.svgs = 0
        self.sections: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")
        if tag == "td":
            self.cells.append("")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open, f"</{tag}> closes nothing"
        assert self.open.pop() == tag, f"</{tag}> closes the wrong element"

    def handle_data(self, data: str) -> None:
        if "td" in self.open:
            self.cells[-1] = (self.cells[-1] + data).strip()


def test_fleet_json_page_and_gauges(tmp_path: Path) -> None:
    with running(make_config(tmp_path, offline_after_s=60)) as central:
        a = central.register("fleet-a", group="line-a")
        b = central.register("fleet-b", group="line-b")
        central.register("fleet-c", group="line-a")
        central.register("fleet-gone")
        central.client.post("/v1/devices/fleet-gone/decommission", headers=bearer(ADMIN))
        now = datetime.now(UTC)
        assert central.post(
            make_batch("fleet-a", group="line-a", window_end=now - timedelta(seconds=30)), a
        ).is_success
        newer = make_batch(
            "fleet-a", group="line-a", version=2, window_end=now - timedelta(seconds=5), dropped_before=3
        )
        assert central.post(newer, a).is_success
        late = make_batch("fleet-a", group="line-a", window_end=now - timedelta(minutes=5))
        assert central.post(late, a).is_success  # an older window arriving late changes no version
        assert central.post(make_batch("fleet-b", group="line-b", rows=40), b).is_success

        fleet = central.client.get("/v1/fleet").json()
        by_id = {d["device_id"]: d for d in fleet["devices"]}
        assert fleet["counts"] == {"online": 2, "offline": 1, "decommissioned": 1}
        assert (by_id["fleet-a"]["serving_version"], by_id["fleet-a"]["spool_dropped"]) == (2, 3)
        assert by_id["fleet-a"]["state"] == "online"
        assert by_id["fleet-c"]["state"] == "offline"  # never heard from
        assert by_id["fleet-c"]["last_seen"] is None
        assert by_id["fleet-gone"]["state"] == "decommissioned"

        page = central.client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "<script" not in page.text
        assert "http" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
            'http-equiv="refresh"', ""
        )  # nothing fetched from anywhere
        parsed = _Page()
        parsed.feed(page.text)
        assert parsed.open == []
        assert {"fleet-a", "fleet-b", "fleet-c", "fleet-gone", "line-a", "pump v2", "3", "online"} <= set(
            parsed.cells
        )
        assert parsed.svgs == 2  # one chart per group with telemetry
        assert parsed.sections == ["model-health", "drift-bands"]

        metrics = scrape(central)
        assert metrics[("edgeml_fleet_devices", (("state", "online"),))] == 2
        assert metrics[("edgeml_fleet_devices", (("state", "decommissioned"),))] == 1
        seen = metrics[
            ("edgeml_device_last_seen_timestamp_seconds", (("device", "fleet-a"), ("group", "line-a")))
        ]
        assert abs(seen - now.timestamp()) < 60
        info = ("device", "fleet-a"), ("group", "line-a"), ("model", "pump")
        assert metrics[("edgeml_device_model_info", (*info, ("version", "2")))] == 1
        assert ("edgeml_device_model_info", (*info, ("version", "1"))) not in metrics  # the old series went
        dropped = ("edgeml_device_spool_dropped_batches_total", (("device", "fleet-a"), ("group", "line-a")))
        assert metrics[dropped] == 3
        lag = metrics[("edgeml_telemetry_lag_seconds", (("device", "fleet-a"), ("group", "line-a")))]
        assert 4 <= lag < 60  # the newest window's, not the late one's
        assert (
            metrics[("edgeml_central_telemetry_rows_total", (("group", "line-b"), ("model", "pump")))] >= 40
        )
        assert any(
            name == "edgeml_http_request_seconds_count" and ("route", "/v1/telemetry") in labels
            for name, labels in metrics
        )


def test_gauges_come_back_after_a_restart_and_leave_with_decommissioning(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with running(config) as central:
        token = central.register("restart-a", group="g")
        assert central.post(make_batch("restart-a", group="g", version=4), token).is_success
    with running(config) as central:
        metrics = scrape(central)
        key = (
            "edgeml_device_model_info",
            (("device", "restart-a"), ("group", "g"), ("model", "pump"), ("version", "4")),
        )
        assert metrics[key] == 1
        central.client.post("/v1/devices/restart-a/decommission", headers=bearer(ADMIN))
        metrics = scrape(central)
        assert key not in metrics
        assert (
            "edgeml_device_last_seen_timestamp_seconds",
            (("device", "restart-a"), ("group", "g")),
        ) not in metrics


def test_fleet_views_can_require_the_admin_token(tmp_path: Path) -> None:
    with running(make_config(tmp_path, fleet_auth="admin")) as central:
        assert central.client.get("/v1/fleet").status_code == 401
        assert central.client.get("/").status_code == 401
        assert central.client.get("/", headers=bearer(ADMIN)).status_code == 200
        assert central.client.get("/v1/fleet", headers=bearer(ADMIN)).json()["devices"] == []


def test_feedback_from_devices_and_admins(central: Central) -> None:
    token = central.register("dev-1", group="line-a")
    labels = {
        "labels": [
            {"prediction_id": "r1", "label": "fault", "predicted": "ok", "model": "pump", "version": 1}
        ]
    }
    answer = central.client.post("/v1/feedback", json=labels, headers=bearer(token))
    assert answer.json()["accepted"] == 1
    other = {"labels": [{"prediction_id": "r2", "label": "ok", "device_id": "dev-2"}]}
    assert central.client.post("/v1/feedback", json=other, headers=bearer(token)).status_code == 403
    assert central.client.post("/v1/feedback", json=other, headers=bearer(ADMIN)).status_code == 200
    assert central.client.post("/v1/feedback", json={"labels": []}, headers=bearer(ADMIN)).status_code == 422
    assert central.client.post("/v1/feedback", json=labels).status_code == 401
    records = {r.prediction_id: r for r in central.store.feedback()}
    assert (records["r1"].device_id, records["r1"].group, records["r1"].source) == (
        "dev-1",
        "line-a",
        "dev-1",
    )
    assert records["r2"].source == "admin"


def test_health_and_readiness(central: Central) -> None:
    assert central.client.get("/healthz").json() == {"status": "ok"}
    assert central.client.get("/readyz").json() == {"status": "ready"}
    central.store.close()  # what a dead writer looks like
    not_ready = central.client.get("/readyz")
    assert not_ready.status_code == 503
    assert central.client.get("/healthz").status_code == 200


def test_the_page_shows_drift_and_accuracy_per_model_version_and_group(
    publisher: Publisher, tmp_path: Path
) -> None:
    publisher.bundle(1)  # its signed manifest carries the reference statistics
    config = make_config(tmp_path, store={"url": publisher.store.url}, keyring=str(publisher.ring))
    with running(config) as central:
        token = central.register("dev-1", group="line-a")
        features = {
            "a": FeatureTelemetry(edges=[0.0], counts=[0, 500]),
            "b": FeatureTelemetry(edges=[0.0], counts=[250, 250]),
        }
        # The page pairs labels with the telemetry window (epoch-aligned hours on a 24 h page) by
        # the time the labels arrive: a batch whose window starts now keeps both in one hour (one
        # that started a minute ago fell in the previous hour in about 1 run of 60).
        now = datetime.now(UTC)
        for version in (1, 7):  # v7 was never published: no manifest to compare with
            batch = make_batch(
                group="line-a", version=version, rows=500, window_end=now + timedelta(minutes=1)
            )
            assert central.post(batch.model_copy(update={"features": features}), token).is_success
        labels = [
            {
                "prediction_id": f"p{i}",
                "label": "ok",
                "predicted": "ok" if i % 4 else "fault",
                "model": "pump",
                "version": 1,
            }
            for i in range(8)
        ]
        assert central.client.post("/v1/feedback", json={"labels": labels}, headers=bearer(token)).is_success

        page = central.client.get("/")
        now = datetime.now(UTC)
        health = model_health(central.app.state.central, now - timedelta(hours=6), timedelta(hours=6) / 24)
        start = page.text.index('<section id="model-health">')
        section = page.text[start : page.text.index("</section>", start) + len("</section>")]
        parsed = _Page()
        parsed.feed(section)
        rows = [parsed.cells[i : i + 7] for i in range(0, len(parsed.cells), 7)]
        by_name = {row[0]: row for row in rows}
        first, unknown = by_name["pump v1 · line-a"], by_name["pump v7 · line-a"]
        assert first[2] == "500"
        assert "drift" in first[3]  # "no drift (...)" or "N drifted: ...": either way, measured
        assert first[6] == "75.0%"  # realized: 6 of the 8 labels match the prediction
        assert unknown[3] == "no manifest"
        assert parsed.svgs == 1  # v1 has accuracy to chart; v7 none
        # each model's compliance mode, from its signed manifest
        assert '<p id="compliance-modes">compliance mode: pump <strong>none</strong></p>' in page.text

        # per feature, the value beside the band it was judged by, as the page's own round judged it
        start = page.text.index('<section id="drift-bands">')
        bands = page.text[start : page.text.index("</section>", start)]
        (judged,) = [w for w in health if w.version == 1 and w.drift is not None]
        assert judged.drift is not None
        figures = bands.split("<figure ")[1:]
        assert len(figures) == len(judged.drift.features) >= 2  # v7 has no manifest: no band to chart
        for f in judged.drift.features:
            (figure,) = [
                g for g in figures if g.startswith(f'data-feature="{f.feature}" data-group="line-a"')
            ]
            caption = f"{f.method} {f.value:.4f}, band {f.lower or 0:.4f}–{f.threshold:.4f}: "
            assert (
                caption + ('<span class="breach">drift' if f.breached else '<span class="calm">in band')
                in figure
            )
            assert '<polygon class="band"' in figure
            assert '<polyline class="value"' in figure
            assert figure.count('<circle class="drift"') == int(f.breached)


def test_prometheus_learns_the_agents_from_the_registry(tmp_path: Path) -> None:
    """The file_sd file follows registrations and decommissions, and is rewritten at start-up."""
    import json

    sd_file = tmp_path / "prometheus" / "agents.json"
    config = make_config(tmp_path / "central", prometheus_sd={"file": str(sd_file), "agent_port": 9101})
    with running(config) as central:
        assert json.loads(sd_file.read_text()) == []
        central.register("pump-001", group="line-a")
        central.register("pump-002")
        assert json.loads(sd_file.read_text()) == [
            {
                "labels": {"device": "pump-001", "group": "line-a", "profile": "x86-64-generic"},
                "targets": ["pump-001:9101"],
            },
            {"labels": {"device": "pump-002", "profile": "x86-64-generic"}, "targets": ["pump-002:9101"]},
        ]
        answer = central.client.post("/v1/devices/pump-001/decommission", headers=bearer(ADMIN))
        assert answer.status_code == 200
        assert [e["targets"] for e in json.loads(sd_file.read_text())] == [["pump-002:9101"]]
    sd_file.unlink()
    with running(config):  # a restart writes it from the registry again
        assert [e["targets"] for e in json.loads(sd_file.read_text())] == [["pump-002:9101"]]


def test_the_page_shows_the_retraining_policy_and_the_last_champion_comparison(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from edgeml.store.local import LocalStore
    from edgeml.train.registry import ChampionComparison, record_comparison

    store = tmp_path / "store"
    record_comparison(
        LocalStore(store),
        ChampionComparison(
            model="pump",
            challenger="2",
            champion="1",
            metric="f1_macro",
            mode="max",
            margin=0.0,
            tolerance=0.0,
            evidence=[
                {
                    "name": "holdout",
                    "rows": 240,
                    "challenger": {"f1_macro": 0.22},
                    "champion": {"f1_macro": 0.44},
                },
                {
                    "name": "field labels",
                    "rows": 21,
                    "challenger": {"f1_macro": 0.3},
                    "champion": {"f1_macro": 0.5},
                },
            ],
            gates=[
                {"name": "beats champion", "passed": False, "detail": "f1_macro 0.2200 vs champion v1 0.4400"}
            ],
            passed=False,
            outcome="v2 failed its gates and was kept from the canary",
            at=datetime.now(UTC),
        ),
    )
    with running(make_config(tmp_path / "central", store={"url": f"file://{store}"})) as central:
        central.register("dev-1", model="pump")
        page = central.client.get("/").text
    assert "Retraining and the champion" in page
    assert "off (no retrain.spec in central.yaml)" in page
    assert "pump: challenger v2 vs champion v1" in page
    assert "<td>field labels</td><td>21</td><td>0.3000</td><td>0.5000</td>" in page
    assert "v2 failed its gates and was kept from the canary" in page
