"""``edgeml demo``: the whole loop on the embedded default, one stage after another.

It grows with the project. Today: check the bundled example specs, simulate a fleet
of pumps, land the readings where the fault-classification spec reads them, ingest
them with Ray Data into the lake, validate the snapshot, build its features, tune and
train (Ray Tune + Optuna, tracked in MLflow), apply the quality gates, export for the
spec's firmware profiles with parity proven, sign the bundles, publish them to the
`stable` channel and verify them as a device would.
"""

from __future__ import annotations

import io
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from edgeml.bundle.keys import KeyRing, export_public
from edgeml.bundle.verify import fetch_bundle
from edgeml.demo.common import DAILY_SWING, DemoOptions, DemoResult, FleetOptions, FleetResult
from edgeml.ingest.runtime import ray_session
from edgeml.pipeline import run_pipeline
from edgeml.settings import Settings
from edgeml.simulate.sensors import SensorSimulation, simulate_sensors, write_csv
from edgeml.spec import load_spec
from edgeml.store import store_from_settings
from edgeml.store.base import ObjectStore

__all__ = ["example_specs", "run_demo"]

LANDING_KEY = "landing/pumps/demo-{seed}.csv"

#: the demo's random-forest space (the example's asks for up to 300 trees, 20 deep, on every feature)
DEMO_FOREST = {
    "n_estimators": {"low": 30, "high": 120, "int": True},
    "max_depth": {"low": 4, "high": 14, "int": True},
    "max_features": {"choices": ["sqrt", "log2"]},
}


def example_specs() -> list[Path]:
    """The example specs shipped inside the package (also at examples/ in the repository)."""
    root = resources.files("edgeml") / "examples"
    return sorted(Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml"))


def run_demo(settings: Settings, console: Console, options: DemoOptions | None = None) -> DemoResult:
    """Run every stage built so far and print what happened and where to look."""
    options = options or DemoOptions()
    result = DemoResult()
    store = store_from_settings(settings)
    result.store_url = store.url
    columns = TextColumn("[progress.description]{task.description}")
    # One Ray for every stage: starting it costs seconds.
    with Progress(SpinnerColumn(), columns, TimeElapsedColumn(), console=console) as progress:
        spec_path = _demo_spec(settings, options)
        with ray_session(settings.ray_address, progress_bars=False):
            _data_to_channel(settings, store, progress, options, spec_path, result)
        if options.fleet and result.channel is not None:
            from edgeml.demo.fleet import run_fleet

            result.fleet = run_fleet(
                settings,
                spec_path,
                lambda text: _stage(progress, text),
                FleetOptions(readings=options.fleet_readings, keep_running=options.keep_running),
            )

        with _stage(progress, "writing the report page") as say:
            from edgeml.demo.report import write_report

            result.report = write_report(result, settings.home)
            say(f"report: {result.report}")

    _print_summary(console, result)
    return result


def _demo_spec(settings: Settings, options: DemoOptions) -> Path:
    """The fault example as the demo runs it, for v1 and for retraining alike."""
    source = next(p for p in example_specs() if p.name == "pump-faults.yaml")
    data = yaml.safe_load(source.read_text())
    data["search"]["trials"] = options.trials
    # a demo's forests need not be a plant's: all-feature splits over 300 deep trees made one trial of
    # the retraining job 4-5x any other, and every export, latency run and agent load slower after it
    data["search"]["space"]["random_forest"] = DEMO_FOREST
    # simulated pumps hold no personal data (and pii columns are never model inputs): devices may
    # sample rows, so the central node runs NannyML on them against the rows the bundle publishes
    data["compliance"] = "none"
    # the demo cannot wait the hour a real canary soaks: a shorter soak, on the same evidence rules
    data["rollout"]["gate"] = data["rollout"].get("gate", {}) | {"soak_s": 20}
    path = settings.home / "demo" / "pump-faults.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _data_to_channel(
    settings: Settings,
    store: ObjectStore,
    progress: Progress,
    options: DemoOptions,
    spec_path: Path,
    result: DemoResult,
) -> None:
    """Stages 1 and 2: simulated sensors to a verified bundle on the stable channel."""
    with _stage(progress, "checking example specs") as say:
        result.specs = [load_spec(path) for path in example_specs()]
        say(f"checked {len(result.specs)} example specs")

    with _stage(progress, "simulating pump sensors") as say:
        sim = SensorSimulation(
            machines=options.machines, readings=options.readings, seed=options.seed, daily_swing=DAILY_SWING
        )
        data = simulate_sensors(sim)
        buffer = io.StringIO()
        result.rows = write_csv(data, buffer)
        csv_text = _with_glitches(buffer.getvalue())
        result.faults = dict(Counter(str(f) for f in data["fault"]))
        say(f"simulated {result.rows:,} readings from {sim.machines} pumps")

    with _stage(progress, "landing readings in the store") as say:
        result.landed_key = LANDING_KEY.format(seed=options.seed)
        info = store.put(result.landed_key, csv_text.encode(), content_type="text/csv")
        say(f"landed {info.size:,} bytes in the store")

    run = run_pipeline(
        load_spec(spec_path), settings, sources=["history"], stage=lambda text: _stage(progress, text)
    )
    result.ingest, result.validation, result.features = run.ingest, run.validation, run.features
    result.training, result.bundles, result.refused = run.training, run.bundles, run.refused
    result.channel = run.channel

    if result.channel is not None:
        with _stage(progress, "verifying the published bundles as a device would") as say:
            result.keyring = settings.home / "keyring"
            export_public(settings.home, result.keyring)
            ring = KeyRing.from_dir(result.keyring)
            staging = settings.home / "device-staging"
            for built in result.bundles:
                staged = fetch_bundle(store, built.key, ring, staging)
                shutil.rmtree(staged.path)
            say(f"{len(result.bundles)} bundle(s) verified with the device key ring")


@contextmanager
def _stage(progress: Progress, description: str) -> Iterator[Callable[[str], None]]:
    """One line of the demo's progress: yields a function that rewrites the line."""
    task = progress.add_task(description, total=None)
    try:
        yield lambda text: progress.update(task, description=text)
    finally:
        progress.stop_task(task)


def _with_glitches(csv_text: str, every: int = 250) -> str:
    """Mimic a historian export: now and then a sensor reads ``ERR``; ingestion quarantines those rows."""
    lines = csv_text.splitlines()
    column = lines[0].split(",").index("temperature")
    for i in range(every, len(lines), every):
        cells = lines[i].split(",")
        cells[column] = "ERR"
        lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _print_summary(console: Console, result: DemoResult) -> None:
    console.print()
    console.print("[bold]What happened[/]")
    for spec in result.specs:
        console.print(
            f"  • spec [cyan]{spec.name}[/] is valid: {spec.task}"
            + (f" of {spec.target}" if spec.target else "")
            + f", {spec.search.trials} trials over {', '.join(spec.search.families)}"
        )
    faults = ", ".join(f"{k} {v:,}" for k, v in sorted(result.faults.items()))
    console.print(f"  • simulated {result.rows:,} pump readings ({faults})")
    console.print(f"  • landed them at [cyan]{result.store_url}/{result.landed_key}[/]")
    if result.ingest is not None:
        src = result.ingest.sources[0]
        console.print(
            f"  • ingested {src.rows_in:,} rows with Ray Data: {src.rows_clean:,} into the lake, "
            f"{src.rows_quarantined:,} quarantined → snapshot [cyan]{result.ingest.snapshot.id}[/]"
        )
    if result.validation is not None:
        v = result.validation
        console.print(
            f"  • validated {len(v.outcomes)} expectations: {len(v.errors)} errors, "
            f"{len(v.warnings)} warnings; {v.rows_valid:,} valid rows"
        )
    if result.features is not None:
        console.print(
            f"  • built features {', '.join(result.features.stats)} → [cyan]{result.features.prefix}[/]"
        )
    if result.training is not None:
        t = result.training
        shown = ", ".join(f"{k} {v:.3f}" for k, v in t.holdout.items())
        console.print(
            f"  • tuned {t.trials} trials with Ray Tune + Optuna; best: {t.family} → registered "
            f"[cyan]{t.model} v{t.version}[/] (holdout {shown})"
        )
        for gate in t.verdict.results:
            console.print(f"    gate {gate.name}: {'pass' if gate.passed else 'FAIL'} — {gate.detail}")
        console.print(
            f"  • {t.model} v{t.version} "
            + ("is now the [green]challenger[/]" if t.verdict.passed else "failed a gate and is not aliased")
        )
    for built in result.bundles:
        m, e = built.manifest, built.manifest.export
        console.print(
            f"  • exported v{m.version} for [cyan]{m.profile}[/] ({m.runtime}, {m.precision}): parity "
            f"max abs diff {e['parity']['max_abs_diff']:.1e}, single-row p50 "
            f"{e['latency']['p50_ms']:.3f} ms; "
            f"signed bundle [cyan]{built.key}[/] (key {m.key_id})"
        )
    for profile, why in result.refused.items():
        console.print(f"  • export for {profile} refused: {why}")
    if result.channel is not None:
        c = result.channel
        console.print(
            f"  • channel [cyan]stable[/] → {c.model} v{c.version} (serial {c.serial}), every bundle "
            f"verified against the device key ring {result.keyring}"
        )
    if result.fleet is not None:
        _print_fleet(console, result.fleet)
        _print_comparison(console, result)
    if result.report is not None:
        console.print(f"  • the report page with plots: [cyan]{result.report}[/]")
    console.print()
    console.print("[bold]Where to look[/]")
    console.print("  • edgeml store ls lake/                              the lake, partitioned by date")
    console.print("  • edgeml data snapshots pump-faults                  dataset versions")
    console.print("  • edgeml data snapshots pump-faults.labels           labelled rows from the field")
    console.print("  • edgeml validate examples/pump-faults.yaml          the validation report")
    console.print("  • edgeml models list pump-faults                     registered versions and aliases")
    console.print("  • edgeml rollout status pump-faults                  where each channel points")
    console.print("  • edgeml audit list                                  every change: who, when, why")
    console.print("  • edgeml bundle show pump-faults/1/x86-64-generic    a signed manifest")
    console.print(
        "  • .venv/bin/mlflow ui --backend-store-uri sqlite:///$EDGEML_HOME/mlflow.db   runs and plots"
    )
    console.print("  • edgeml spec check examples/*.yaml                  what each example pipeline does")
    console.print("  • docs/spec.md                                       every spec field explained")


def _print_comparison(console: Console, result: DemoResult) -> None:
    """The last champion comparison: the field's labelled rows it trained on, and its outcome."""
    from edgeml.store import open_store
    from edgeml.train.registry import last_comparison

    model = result.training.model if result.training else "pump-faults"
    found = last_comparison(open_store(result.store_url), model) if result.store_url else None
    if found is None:
        return
    used = found.labelled
    if used:
        console.print(
            f"  • v{found.challenger} trained with {used['trained']:,} labelled rows from the field "
            f"(x{used['weight']}), {used['held_out']:,} more held out to compare it with the champion"
        )
    for e in found.evidence:
        mine, theirs = e["challenger"].get(found.metric), e["champion"].get(found.metric)
        if mine is not None and theirs is not None:
            console.print(
                f"    {e['name']} ({e['rows']:,} rows): {found.metric} v{found.challenger} {mine:.4f}"
                f" vs champion v{found.champion} {theirs:.4f}"
            )
    console.print(f"  • champion comparison: {found.outcome}")


def _print_fleet(console: Console, fleet: FleetResult) -> None:
    for at, text in fleet.timeline:
        console.print(f"  • [dim]{at:6.1f} s[/] {text}")
    rows = sum(t.rows for t in fleet.traffic.values())
    console.print(
        f"  • {rows:,} readings predicted in the field, {fleet.failed_requests} failed requests; "
        f"{len(fleet.alerts)} alert message(s) received by the webhook"
    )
    for what, accuracy in fleet.accuracy.items():
        console.print(f"  • realized accuracy of {what}: {accuracy:.1%}")
    versions = ", ".join(f"{d} v{v}" for d, v in fleet.versions.items())
    console.print(f"  • agents at the end: {versions}")
