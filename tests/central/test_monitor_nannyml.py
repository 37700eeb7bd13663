"""NannyML in the live watch: a monitor over the central node's DuckDB store runs NannyML on the row
samples of NannyML's car-loan data, against reference rows signed and published next to the manifest,
and shows the results in /v1/drift, the gauges and the webhook alerts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.conftest import Publisher
from bundle.conftest import local_ray
from edgeml.agent.model import LoadedModel, ModelHolder
from edgeml.agent.telemetry import TelemetryWindow
from edgeml.bundle.build import build_bundle, publish_bundle
from edgeml.bundle.keys import KeyRing, export_public, init_keys, load_signer
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.verify import fetch_bundle
from edgeml.central.alerts import Alerter
from edgeml.central.config import CentralConfig, NannyMLConfig
from edgeml.central.monitor import NANNYML_ALERT, REFERENCE_CHUNKS, GroupStatus, Monitor
from edgeml.central.performance import StoredReferenceRows, probability_column, reference_rows_key
from edgeml.central.services.targets import TargetResolver
from edgeml.errors import ConfigError
from edgeml.features.window import compute_batch
from edgeml.ingest.coerce import coerce_batch
from edgeml.observability import REGISTRY
from edgeml.settings import load_settings
from edgeml.spec.models import Spec
from edgeml.store import store_from_settings
from edgeml.store.local import LocalStore
from edgeml.telemetry.schema import TelemetryBatch
from edgeml.train.data import model_inputs
from edgeml.train.pipeline import input_layout
from edgeml.train.run import train
from train.helpers import faults_spec, make_snapshot, simulate_frame, spec_from_dict

from .conftest import Central, make_config, running
from .test_alerts import Webhook, webhook  # noqa: F401 (a fixture: a webhook receiver)
from .test_drift import CHUNK, FEATURES, LABELS, car_loan, make_batch, make_manifest, probabilities

SAMPLE = 100  # sampled rows per batch: ten batches of 500 rows give a group 1,000
REFERENCE_ROWS = 20_000


def _reference_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Reference rows as published for NannyML: inputs, prediction, probabilities, target."""
    proba = probabilities(rows)
    out = rows[FEATURES].assign(prediction=rows["prediction"], target=rows["truth"])
    for k, label in enumerate(LABELS):
        out[probability_column(label)] = proba[:, k]
    return out.reset_index(drop=True)


def _publish(publisher: Publisher, manifest: Manifest, reference: pd.DataFrame | None, tmp: Path) -> None:
    """The signed manifest (no files: the monitor reads only its reference), and signed reference rows."""
    tmp.mkdir(parents=True, exist_ok=True)
    publish_bundle(publisher.store, publisher.signer, manifest, tmp)
    if reference is None:
        return
    buffer = io.BytesIO()
    reference.to_parquet(buffer, index=False)
    key = reference_rows_key(manifest.model, manifest.version, manifest.profile)
    publisher.store.put(key, buffer.getvalue())
    publisher.store.put(key + ".sig", publisher.signer.sign(buffer.getvalue()))


def _batches(rows: pd.DataFrame, manifest: Manifest, group: str, start: datetime) -> list[TelemetryBatch]:
    """Ten devices' batches of 500 rows; under compliance none each samples rows with their probabilities."""
    sample = SAMPLE if manifest.compliance == "none" else 0
    out = []
    for j in range(0, len(rows), 500):
        chunk = rows.iloc[j : j + 500]
        batch = make_batch(
            chunk, manifest, start=start, group=group, device=f"{group}-{j // 500}", sample=sample
        )
        proba = probabilities(chunk.head(sample))
        sampled = [
            row.model_copy(update={"probabilities": dict(zip(LABELS, map(float, p), strict=True))})
            for row, p in zip(batch.sample, proba, strict=True)
        ]
        out.append(batch.model_copy(update={"sample": sampled}))
    return out


@pytest.fixture
def fleet(publisher: Publisher, tmp_path: Path) -> Iterator[tuple[Central, datetime]]:
    """A central node whose store holds five minutes of four groups' telemetry:

    line-a: car-loan v1, an undrifted chunk; line-b: v1, a drifted chunk; line-c: v2 under gdpr
    (no samples); line-d: v3, whose published reference rows NannyML refuses (NaN probabilities).
    """
    reference, analysis = car_loan()
    ref_rows = reference.iloc[:REFERENCE_ROWS]
    v1 = make_manifest(reference)
    v2 = make_manifest(reference, version=2).model_copy(update={"compliance": "gdpr"})
    v3 = make_manifest(reference, version=3)
    _publish(publisher, v1, _reference_frame(ref_rows), tmp_path / "v1")
    _publish(publisher, v2, None, tmp_path / "v2")
    _publish(publisher, v3, _reference_frame(ref_rows).assign(**{"probability:1": np.nan}), tmp_path / "v3")
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False, "nannyml": {"min_rows": 500, "max_rows": 800}},
    )
    now = datetime.now(UTC)
    start = now - timedelta(minutes=5)
    calm, drifted = analysis.iloc[CHUNK : 2 * CHUNK], analysis.iloc[7 * CHUNK : 8 * CHUNK]
    with running(config) as central:
        store = central.store
        for group, manifest, rows in (
            ("line-a", v1, calm),
            ("line-b", v1, drifted),
            ("line-c", v2, calm),
            ("line-d", v3, calm),
        ):
            for batch in _batches(rows, manifest, group, start):
                store.register_device(
                    group=group, profile=batch.profile, model=batch.model, device_id=batch.device_id
                )
                store.ingest(batch)
        yield central, now


def _watch(central: Central, alerter: Alerter | None = None) -> Monitor:
    """The watch as the node runs it: the node's store, manifests and reference rows from its object store."""
    config: CentralConfig = central.config
    resolver: TargetResolver = central.app.state.central.targets
    monitor = Monitor(
        central.store,
        resolver.manifest,
        alerter=alerter,
        nannyml=config.monitor.nannyml,
        references=StoredReferenceRows(resolver.store, config.keyring),
    )
    central.app.state.central.monitor = monitor  # what /v1/drift reads
    return monitor


def _gauge(name: str, group: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"model": "car-loan", "version": "1", "group": group} | labels)


def test_nannyml_runs_on_sampled_groups_and_shows_in_drift_gauges_and_alerts(
    fleet: tuple[Central, datetime],
    webhook: Webhook,  # noqa: F811 (the fixture imported above)
) -> None:
    central, now = fleet
    with Alerter(webhook.url, backoff_s=0.01) as alerter:
        monitor = _watch(central, alerter)
        statuses = monitor.evaluate(now)
    by_group: dict[str | None, GroupStatus] = {s.group: s for s in statuses}
    assert set(by_group) == {"line-a", "line-b", "line-c", "line-d"}

    runs = {g: s.nannyml for g, s in by_group.items()}
    assert all(run is not None and run.at == now for run in runs.values())
    calm, drifted = runs["line-a"], runs["line-b"]
    assert calm is not None
    assert calm.report is not None
    assert drifted is not None
    assert drifted.report is not None
    assert calm.report.rows == drifted.report.rows == 800  # 1,000 sampled rows, capped by max_rows
    flagged = {d.feature for d in drifted.report.drift if d.alert}
    assert {"car_value", "loan_length", "salary_range", "repaid_loan_on_prev_car"} <= flagged
    assert not {d.feature for d in calm.report.drift if d.alert} & {"car_value", "loan_length"}
    assert calm.report.performance is not None
    assert drifted.report.performance is not None
    assert calm.report.performance.estimator == "CBPE"
    assert not calm.report.performance.alert
    assert drifted.report.performance.alert

    gdpr, broken = runs["line-c"], runs["line-d"]
    assert gdpr is not None
    assert gdpr.report is None
    assert gdpr.reason == "compliance 'gdpr' allows no row samples"
    assert broken is not None
    assert broken.report is None
    assert broken.reason is not None
    assert broken.reason.startswith("NannyML run failed: InvalidArgumentsException")
    # the failure stayed with its group: its histogram drift and accuracy were judged as ever
    assert by_group["line-d"].estimate is not None

    view = central.client.get("/v1/drift").json()
    latest = {s["group"]: s for s in view["latest"]}
    shown = latest["line-b"]["nannyml"]
    assert set(shown["drift_alerts"]) == flagged
    assert shown["performance"]["estimator"] == "CBPE"
    assert shown["performance"]["lower"] <= shown["performance"]["value"] <= shown["performance"]["upper"]
    assert shown["rows"] == 800
    assert latest["line-a"]["nannyml"]["performance"]["alert"] is False
    assert latest["line-c"]["nannyml"]["reason"] == "compliance 'gdpr' allows no row samples"
    assert latest["line-c"]["nannyml"]["drift"] == []

    page = central.client.get("/")  # the fleet page's NannyML table: a row per group
    assert page.status_code == 200
    table = page.text.split('<table id="nannyml">')[1].split("</table>")[0]
    rows = {row.split("</td><td>")[1]: row for row in table.split("<tr><td>")[1:]}
    assert set(rows) == {"line-a", "line-b", "line-c", "line-d"}
    assert all(feature in rows["line-b"] for feature in flagged)
    assert "CBPE accuracy" in rows["line-b"]
    assert ": alert" in rows["line-b"]
    assert ": alert" not in rows["line-a"]
    assert "compliance &#x27;gdpr&#x27; allows no row samples" in rows["line-c"]

    alert_info, accuracy = "edgeml_nannyml_drift_alert_info", "edgeml_nannyml_estimated_accuracy_ratio"
    assert _gauge(alert_info, "line-b", feature="car_value") == 1.0
    assert _gauge(alert_info, "line-a", feature="car_value") == 0.0
    performance = {"estimator": "CBPE", "metric": "accuracy"}
    assert _gauge("edgeml_nannyml_performance_alert_info", "line-b", **performance) == 1.0
    assert _gauge("edgeml_nannyml_performance_alert_info", "line-a", **performance) == 0.0
    assert _gauge(accuracy, "line-b", bound="estimate") == pytest.approx(drifted.report.performance.value)
    assert _gauge(accuracy, "line-b", bound="lower") == pytest.approx(drifted.report.performance.lower)
    assert (
        REGISTRY.get_sample_value(
            "edgeml_nannyml_performance_alert_info",
            {"model": "car-loan", "version": "2", "group": "line-c"} | performance,
        )
        is None
    )

    fired = [b for b in webhook.bodies if b["alert"] == NANNYML_ALERT]
    assert [(b["group"], b["status"]) for b in fired] == [("line-b", "firing")]
    assert fired[0]["values"]["accuracy"] == pytest.approx(drifted.report.performance.value)


def test_nannyml_keeps_its_own_cadence(fleet: tuple[Central, datetime]) -> None:
    central, now = fleet
    monitor = _watch(central)
    first = {s.group: s.nannyml for s in monitor.evaluate(now)}
    # the next round, within nannyml.interval_s: the last pass rides on the statuses, not rerun
    again = {s.group: s.nannyml for s in monitor.evaluate(now + timedelta(seconds=30))}
    assert again == first
    later = {s.group: s.nannyml for s in monitor.evaluate(now + timedelta(seconds=300))}
    assert all(run is not None and run.at == now + timedelta(seconds=300) for run in later.values())


def test_missing_or_tampered_reference_rows_skip_the_group_with_the_reason(
    publisher: Publisher, tmp_path: Path
) -> None:
    reference, analysis = car_loan()
    manifest = make_manifest(reference)
    _publish(publisher, manifest, None, tmp_path / "v1")
    key = reference_rows_key("car-loan", 1, "x86-64-generic")
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False, "nannyml": {"interval_s": 1}},
    )
    now = datetime.now(UTC)
    with running(config) as central:
        for batch in _batches(analysis.iloc[:1000], manifest, "line-a", now - timedelta(minutes=5)):
            central.store.ingest(batch)
        monitor = _watch(central)
        (missing,) = monitor.evaluate(now)
        # rows whose signature does not match them are refused: they would decide what drift is
        _publish(publisher, manifest, _reference_frame(reference.iloc[:2000]), tmp_path / "v1")
        publisher.store.put(key, b"not the signed rows")
        (tampered,) = monitor.evaluate(now + timedelta(seconds=1))
    assert missing.nannyml is not None
    assert missing.nannyml.report is None
    assert missing.nannyml.reason == f"no reference rows published at {key}"
    assert missing.drift.features  # the histogram drift was judged all the same
    assert tampered.nannyml is not None
    assert tampered.nannyml.reason is not None
    assert tampered.nannyml.reason.startswith(f"reference rows {key} refused: the signature does not match")


def test_nannyml_config_is_checked(tmp_path: Path) -> None:
    assert NannyMLConfig().enabled
    with pytest.raises(ValueError, match=r"max_rows \(100\) must be at least min_rows \(500\)"):
        NannyMLConfig(min_rows=500, max_rows=100)
    path = tmp_path / "central.yaml"
    make_config(tmp_path)  # writes the token files
    path.write_text(
        f"db_path: {tmp_path / 'db.duckdb'}\nadmin_token_file: {tmp_path / 'admin.token'}\n"
        "monitor:\n  nannyml:\n    interval_s: 0\n"
    )
    from edgeml.central.config import load_central_config

    with pytest.raises(ConfigError, match=r"monitor\.nannyml\.interval_s: Input should be greater than 0"):
        load_central_config(path)


def test_nannyml_gets_ten_reference_chunks_of_what_it_analyses_or_says_it_has_too_few(
    publisher: Publisher, tmp_path: Path
) -> None:
    """6,000 reference rows make ten chunks of 600: of 1,000 sampled rows 600 are analysed, and the
    status says so; 3,000 make ten of 300, fewer than min_rows: no report, and the reason why."""
    reference, analysis = car_loan()
    some = make_manifest(reference, version=4)
    few = make_manifest(reference, version=5)
    _publish(publisher, some, _reference_frame(reference.iloc[:6000]), tmp_path / "v4")
    _publish(publisher, few, _reference_frame(reference.iloc[:3000]), tmp_path / "v5")
    config = make_config(
        tmp_path / "central",
        store={"url": publisher.store.url},
        keyring=str(publisher.ring),
        monitor={"enabled": False, "nannyml": {"min_rows": 500, "max_rows": 800}},
    )
    now = datetime.now(UTC)
    calm = analysis.iloc[CHUNK : 2 * CHUNK]
    with running(config) as central:
        for group, manifest in (("line-e", some), ("line-f", few)):
            for batch in _batches(calm, manifest, group, now - timedelta(minutes=5)):
                central.store.register_device(
                    group=group, profile=batch.profile, model=batch.model, device_id=batch.device_id
                )
                central.store.ingest(batch)
        monitor = _watch(central)
        statuses = {s.group: s for s in monitor.evaluate(now)}
        view = {s["group"]: s["nannyml"] for s in central.client.get("/v1/drift").json()["latest"]}
        page = central.client.get("/").text
    cut, short = statuses["line-e"].nannyml, statuses["line-f"].nannyml
    assert cut is not None
    assert cut.report is not None
    assert cut.report.rows == 600 == 6000 // REFERENCE_CHUNKS
    assert cut.note == "600 of 1000 sampled rows analysed: the 6000 reference rows make 10 chunks of 600"
    assert short is not None
    assert short.report is None
    reason = (
        "too few reference rows: 3000 make 10 chunks of 300 rows, fewer than the 500 NannyML analyses "
        "at least (nannyml.min_rows)"
    )
    assert short.reason == reason
    assert view["line-e"]["note"] == cut.note
    assert view["line-e"]["rows"] == 600
    assert view["line-f"]["reason"] == reason
    assert view["line-f"]["rows"] is None
    assert cut.note in page
    assert "too few reference rows: 3000 make 10 chunks" in page


# --- a bundle built by `edgeml bundle build`, sampled by an agent, judged with the defaults -------


@dataclass
class Built:
    store: LocalStore
    keyring: Path
    ring: KeyRing
    keys: dict[str, str]  # which -> the manifest key of its bundle
    spec: Spec


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The fault classifier trained and bundled twice under compliance none: on 30,000 readings
    (a 6,000-row holdout) and on 1,200 (a 240-row holdout)."""
    home = tmp_path_factory.mktemp("nannyml-defaults-home")
    (home / "specs").mkdir()
    settings = load_settings({"EDGEML_HOME": str(home)})
    init_keys(home)
    export_public(home, home / "keyring")
    signer = load_signer(home)
    store = store_from_settings(settings)
    assert isinstance(store, LocalStore)
    keys, spec = {}, None
    with local_ray():
        for which, machines, readings in (("large", 6, 5000), ("tiny", 3, 400)):
            data = faults_spec(f"faults-{which}", families=["random_forest"], trials=1, scheduler="fifo")
            data["search"]["space"] = {
                "random_forest": {"n_estimators": {"low": 20, "high": 20, "int": True}}
            }
            data["gates"], data["compliance"] = {}, "none"
            spec = spec_from_dict(data, home / "specs")
            frame = simulate_frame(machines=machines, readings=readings)
            report = train(spec, settings, make_snapshot(spec, settings, frame))
            uri = f"models:/{report.model}/{report.version}"
            keys[which] = build_bundle(uri, "x86-64-generic", settings, store, signer).key
    assert spec is not None
    return Built(store, home / "keyring", KeyRing.from_home(home), keys, spec)


def _agent_batches(built: Built, which: str, group: str, tmp: Path) -> list[TelemetryBatch]:
    """Fresh readings (another seed) through an agent's model and telemetry windows: six windows of
    1,000 rows, 100 sampled rows each."""
    staged = fetch_bundle(built.store, built.keys[which], built.ring, tmp / which)
    model = LoadedModel(staged.path, staged.manifest)
    window = TelemetryWindow(f"{group}-1", group=group, window_rows=1000, sample_rows=100, seed=0)
    holder = ModelHolder()
    holder.watch(window)
    holder.swap(model)
    spec = built.spec
    table = coerce_batch(simulate_frame(machines=6, readings=1000, seed=9), spec.schema_, source="sim").clean
    features = compute_batch(table, spec.features.window, entity="machine_id", timestamp="ts").to_pandas()
    inputs = model_inputs(features, input_layout(spec))
    for start in range(0, len(inputs), 50):  # requests of 50 rows
        part = {f.name: inputs[f.name].iloc[start : start + 50].tolist() for f in model.manifest.inputs}
        holder.observe(model, part, model.predict(part), 0.001)
    return window.flush()


@pytest.mark.slow
def test_nannyml_with_its_defaults_runs_on_a_built_bundle_or_says_its_holdout_is_too_small(
    built: Built, tmp_path: Path
) -> None:
    """The bundle's reference is its snapshot's holdout split: 6,000 rows make ten chunks of 600, so
    NannyML's default min_rows (500) is met and the 600 rows an agent sampled are analysed whole; a
    240-row holdout makes ten chunks of 24, and the status says so."""
    config = make_config(
        tmp_path / "central",
        store={"url": built.store.url},
        keyring=str(built.keyring),
        monitor={"enabled": False},  # the node's default NannyML settings
    )
    assert config.monitor.nannyml == NannyMLConfig()
    with running(config) as central:
        for which, group in (("large", "line-a"), ("tiny", "line-b")):
            batches = _agent_batches(built, which, group, tmp_path / "devices")
            assert [len(b.sample) for b in batches] == [100] * 6
            token = central.register(batches[0].device_id, group, batches[0].model)
            for batch in batches:
                assert central.post(batch, token).status_code == 200
        monitor = _watch(central)
        statuses = {s.group: s for s in monitor.evaluate(datetime.now(UTC) + timedelta(seconds=1))}
        view = {s["group"]: s["nannyml"] for s in central.client.get("/v1/drift").json()["latest"]}
    large, tiny = statuses["line-a"].nannyml, statuses["line-b"].nannyml
    assert large is not None
    assert large.reason is None
    assert large.note is None  # 600 sampled rows, fewer than a tenth of the reference: all analysed
    assert large.report is not None
    assert large.report.rows == 600
    assert {d.feature for d in large.report.drift} >= {"temperature", "vibration", "pressure"}
    assert large.report.performance is not None
    assert large.report.performance.estimator == "CBPE"
    assert view["line-a"]["rows"] == 600
    assert tiny is not None
    assert tiny.report is None
    assert tiny.reason == (
        "too few reference rows: 240 make 10 chunks of 24 rows, fewer than the 500 NannyML analyses "
        "at least (nannyml.min_rows)"
    )
    assert view["line-b"]["reason"] == tiny.reason
