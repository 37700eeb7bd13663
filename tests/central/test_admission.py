"""What one device may send: its enrolment, real times, its rate (services/admission.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.conftest import Publisher
from edgeml.audit import AuditLog
from edgeml.bundle.manifest import Histogram
from edgeml.central.services.admission import DeviceRateLimiter
from edgeml.errors import RateLimited
from edgeml.observability import REGISTRY
from edgeml.telemetry.schema import FeatureTelemetry
from telemetry.batches import make_batch

from .conftest import ADMIN, Central, bearer, make_config, running
from .test_targets import config_for


def test_a_batch_claiming_another_group_model_or_profile_is_403_naming_the_field(central: Central) -> None:
    token = central.register("press-1", group="line-a")
    good = make_batch("press-1", group="line-a")
    for field, value in (("group", "line-b"), ("group", None), ("model", "valve"), ("profile", "arm64")):
        answer = central.post(good.model_copy(update={field: value}), token)
        assert answer.status_code == 403, (field, value)
        assert answer.json()["detail"].startswith(f"{field}: device press-1 is enrolled with {field}")
    assert central.store.batch_count() == 0
    assert central.post(good, token).status_code == 200


def test_only_an_admin_changes_a_devices_enrolment_and_the_change_is_audited(
    publisher: Publisher, tmp_path: Path
) -> None:
    with running(make_config(tmp_path / "central", **config_for(publisher))) as central:
        token = central.register("press-1", group="line-a")
        move = {"group": "line-b"}
        assert (
            central.client.patch("/v1/devices/press-1", json=move, headers=bearer(token)).status_code == 401
        )
        assert central.post(make_batch("press-1", group="line-b"), token).status_code == 403
        answer = central.client.patch("/v1/devices/press-1", json=move, headers=bearer(ADMIN))
        assert answer.status_code == 200, answer.text
        assert (answer.json()["group"], answer.json()["model"]) == ("line-b", "pump")  # the rest stays
        assert central.post(make_batch("press-1", group="line-b"), token).status_code == 200
        assert central.post(make_batch("press-1", group="line-a"), token).status_code == 403
        # wrong input gets 4xx naming the field
        unknown = central.client.patch("/v1/devices/nobody", json=move, headers=bearer(ADMIN))
        assert unknown.status_code == 404
        null_model = central.client.patch("/v1/devices/press-1", json={"model": None}, headers=bearer(ADMIN))
        assert null_model.status_code == 422
        assert null_model.json()["detail"][0]["loc"] == ["body", "model"]
        bad_slug = central.client.patch(
            "/v1/devices/press-1", json={"group": "Line B!"}, headers=bearer(ADMIN)
        )
        assert bad_slug.status_code == 422
        assert bad_slug.json()["detail"][0]["loc"][-1] == "group"
    entry = AuditLog(publisher.store).entries()[-1]
    assert (entry.actor, entry.action, entry.subject) == ("central", "device.reassign", "press-1")
    assert (entry.before, entry.after) == ({"group": "line-a"}, {"group": "line-b"})


def test_the_new_enrolment_survives_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path / "central")
    with running(config) as central:
        token = central.register("press-1", group="line-a")
        patched = central.client.patch("/v1/devices/press-1", json={"group": None}, headers=bearer(ADMIN))
        assert patched.status_code == 200
    with running(config) as central:
        assert central.post(make_batch("press-1", group=None), token).status_code == 200
        assert central.post(make_batch("press-1", group="line-a"), token).status_code == 403


NOW = datetime.now(UTC)
WINDOWS = {
    "a window ending an hour ahead": ("window_end", {"window_end": (NOW + timedelta(hours=1)).isoformat()}),
    "year 9999 at -14:00": ("window_end", {"window_end": "9999-12-31T23:59:59-14:00"}),
    "year 1 at +14:00": ("window_start", {"window_start": "0001-01-01T00:00:00+14:00"}),
    "a clock never set": ("window_start", {"window_start": "1970-01-01T00:00:00Z"}),
    "start after end": ("window_start", {"window_start": (NOW + timedelta(seconds=1)).isoformat()}),
    "a two-day window": ("window_start", {"window_start": (NOW - timedelta(days=2)).isoformat()}),
}


@pytest.mark.parametrize("case", list(WINDOWS))
def test_windows_out_of_time_are_422_naming_the_field_and_nothing_is_stored(
    central: Central, case: str
) -> None:
    field, change = WINDOWS[case]
    token = central.register()
    body = make_batch(window_end=NOW).model_dump(mode="json") | change
    answer = central.client.post("/v1/telemetry", json=body, headers=bearer(token))
    assert answer.status_code == 422, answer.text
    assert [e["loc"] for e in answer.json()["detail"]] == [["body", field]]
    assert central.store.batch_count() == 0
    for page in ("/", "/v1/fleet"):  # the fleet page keeps answering
        assert central.client.get(page).status_code == 200, page


def test_the_clock_skew_allowance_is_configurable(tmp_path: Path) -> None:
    ahead = make_batch(window_end=datetime.now(UTC) + timedelta(minutes=2))
    with running(make_config(tmp_path / "strict", limits={"clock_skew_s": 30})) as central:
        answer = central.post(ahead, central.register())
        assert answer.status_code == 422
        assert "limits.clock_skew_s allows 30" in answer.json()["detail"][0]["msg"]
    with running(make_config(tmp_path / "default")) as central:  # 5 minutes by default
        assert central.post(ahead, central.register()).status_code == 200


def test_a_device_over_its_rate_gets_429_with_retry_after_and_others_go_on(tmp_path: Path) -> None:
    limits = {"device_batches_per_s": 0.1, "device_burst": 3}
    with running(make_config(tmp_path / "central", limits=limits)) as central:
        noisy, quiet = central.register("noisy"), central.register("quiet")
        answers = [central.post(make_batch("noisy"), noisy) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 10  # one batch's worth: 1 / 0.1 s
        assert "noisy" in answers[3].json()["detail"]
        assert central.post(make_batch("quiet"), quiet).status_code == 200
        assert central.store.batch_count() == 4


def test_the_bucket_refills_at_its_rate() -> None:
    bucket = DeviceRateLimiter(rate=2.0, burst=2)
    bucket.take("d", now=0.0)
    bucket.take("d", now=0.0)
    with pytest.raises(RateLimited) as refused:
        bucket.take("d", now=0.1)
    assert refused.value.retry_after_s == 1
    bucket.take("d", now=0.6)  # 0.5 s at 2/s: one more
    bucket.take("e", now=0.6)  # another device has its own bucket


def _series(metric: str, label: str, value: str) -> int:
    return sum(
        1
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == metric and s.labels.get(label) == value
    )


def test_an_invented_model_or_group_adds_no_metric_series(central: Central) -> None:
    token = central.register("press-1", group="line-enrolled")
    for field, value in (("model", "invented-model-x"), ("group", "invented-group-x")):
        assert (
            central.post(
                make_batch("press-1", group="line-enrolled").model_copy(update={field: value}), token
            ).status_code
            == 403
        )
    scraped = central.client.get("/metrics").text
    assert "invented-model-x" not in scraped
    assert "invented-group-x" not in scraped
    assert _series("edgeml_central_telemetry_rows_total", "model", "invented-model-x") == 0
    assert central.post(make_batch("press-1", group="line-enrolled"), token).status_code == 200
    assert _series("edgeml_central_telemetry_rows_total", "group", "line-enrolled") == 1


def test_bins_not_on_the_versions_reference_are_422_naming_the_histogram(
    publisher: Publisher, tmp_path: Path
) -> None:
    publisher.bundle(1)  # its reference: inputs a and b, each cut at 0.0; no score histograms
    good = {
        "a": FeatureTelemetry(edges=[0.0], counts=[3, 7]),
        "b": FeatureTelemetry(edges=[0.0], counts=[5, 5]),
        "c": FeatureTelemetry(missing=1),  # an input without a reference: no bins
    }
    cases = {
        ("features", "a"): good | {"a": FeatureTelemetry(edges=[0.5], counts=[3, 7])},
        ("features", "b", "counts"): good | {"b": FeatureTelemetry(edges=[0.0], counts=[1, 2, 7])},
        ("features", "c"): good | {"c": FeatureTelemetry(edges=[0.0], counts=[4, 6])},
        ("features", "b"): good | {"b": FeatureTelemetry(values=["x"], counts=[5, 5])},
    }
    with running(make_config(tmp_path / "central", **config_for(publisher))) as central:
        token = central.register("dev-1")
        base = make_batch("dev-1")
        for loc, features in cases.items():
            answer = central.post(base.model_copy(update={"features": features}), token)
            assert answer.status_code == 422, loc
            assert [tuple(e["loc"][1:]) for e in answer.json()["detail"]] == [loc]
        score = Histogram(edges=[0.5], counts=[2, 8])
        odd_score = base.model_copy(update={"features": good, "scores": {"probability:ok": score}})
        answer = central.post(odd_score, token)
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["loc"] == ["body", "scores", "probability:ok"]
        assert central.store.batch_count() == 0
        assert central.post(base.model_copy(update={"features": good}), token).status_code == 200
        # a version with no published manifest has no reference to check against
        assert central.post(make_batch("dev-1", version=7), token).status_code == 200
