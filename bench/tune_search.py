"""Ray Tune search: parallel speed-up and per-trial overhead, against plain Optuna.

Targets (issue #4), measured in ONE run on the same data and the same 16 trials:

- speed-up: the search with 2 concurrent trials is ≥ 1.6× faster than with 1;
- overhead: Ray Tune (1 trial at a time) costs ≤ 0.5 s per trial more than plain Optuna
  running the same objective sequentially in one process.

The objective is edgeml's own trial (``fit_trial``: build the pipeline, fit on the train
split, score on validation) for a random forest on simulated pump readings. Ray is
started before any timer.

    .venv/bin/python bench/tune_search.py [--trials 16] [--no-write-results]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    describe_machine,
    load_average,
    markdown_table,
    now_utc,
    text_table,
    verdict,
    write_section,
)

SPEC = """
name: bench-tune
sources: [{name: sim, kind: file, path: unused.csv}]
schema:
  timestamp: ts
  entity: machine_id
  columns:
    msg_id: {type: string}
    ts: {type: timestamp}
    machine_id: {type: string}
    temperature: {type: float}
    vibration: {type: float}
    pressure: {type: float}
    rpm: {type: float}
    power_kw: {type: float}
    fault: {type: category, values: [ok, bearing_wear, overheating, pressure_leak]}
    is_anomaly: {type: bool}
features:
  exclude: [msg_id, is_anomaly]
  window:
    - {name: vibration_mean_30, column: vibration, agg: mean, size: 30}
    - {name: temperature_max_20, column: temperature, agg: max, size: 20}
target: fault
task: classification
search:
  families: [random_forest]
  trials: TRIALS
  scheduler: fifo
  seed: 3
  space:
    random_forest:
      n_estimators: {low: 60, high: 120, int: true}
      max_depth: {low: 8, high: 16, int: true}
"""


def training_data(trials: int):  # type: ignore[no-untyped-def]
    import pandas as pd

    from edgeml.features.build import apply_row_features
    from edgeml.features.window import compute_batch
    from edgeml.ingest.coerce import coerce_batch
    from edgeml.simulate.sensors import SensorSimulation, simulate_sensors
    from edgeml.spec import parse_spec
    from edgeml.train.data import split_features

    spec = parse_spec(SPEC.replace("TRIALS", str(trials)))
    frame = pd.DataFrame(simulate_sensors(SensorSimulation(machines=8, readings=2000, seed=1)))
    clean = coerce_batch(frame, spec.schema_, source="sim").clean
    table = compute_batch(clean, spec.features.window, entity="machine_id", timestamp="ts")
    table = apply_row_features(table, spec.features.row)
    return spec, split_features(spec, table.to_pandas(), "bench")


def plain_optuna(spec, data) -> float:  # type: ignore[no-untyped-def]
    import optuna

    from edgeml.train.families import suggest
    from edgeml.train.search import fit_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = spec.metric

    def objective(trial: optuna.Trial) -> float:
        suggest(trial, list(spec.search.families), spec.search.space)
        config = {**trial.params, "seed": spec.search.seed}
        scores: dict[str, float] = {}
        fit_trial(spec, data, config, report=scores.update)
        return scores[metric]

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=spec.search.seed)
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=spec.search.trials)
    return time.perf_counter() - start


def tune(spec, data, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    from edgeml.train.search import run_search

    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        result = run_search(spec, data, storage=storage, concurrency=concurrency)
        elapsed = time.perf_counter() - start
    assert len(result.trials) == spec.search.trials
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=16, help="trials per search (default 16)")
    parser.add_argument("--no-write-results", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()

    import ray
    import torch

    torch.set_num_threads(1)  # as in a Tune trial: one core each
    machine, load_before = describe_machine(), load_average()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    spec, data = training_data(args.trials)
    optuna_s = plain_optuna(spec, data)
    tune1 = tune(spec, data, 1)
    tune2 = tune(spec, data, 2)
    ray.shutdown()
    load_after = load_average()

    speedup = tune1 / tune2
    overhead = (tune1 - optuna_s) / args.trials
    rows = [
        ["plain Optuna, sequential, one process (peer)", f"{optuna_s:.1f}", f"{optuna_s / args.trials:.2f}"],
        [
            "edgeml search (Ray Tune + Optuna), 1 trial at a time",
            f"{tune1:.1f}",
            f"{tune1 / args.trials:.2f}",
        ],
        ["edgeml search (Ray Tune + Optuna), 2 at a time", f"{tune2:.1f}", f"{tune2 / args.trials:.2f}"],
    ]
    headers = ["run", "wall s", "s per trial"]
    checks = [
        ["speed-up, 2 vs 1 concurrent", f"{speedup:.2f}×", "≥ 1.6×", verdict(speedup, 1.6)],
        [
            "Tune overhead per trial vs plain Optuna",
            f"{overhead:+.2f} s",
            "≤ 0.5 s",
            verdict(overhead, 0.5, higher_is_better=False),
        ],
    ]
    check_headers = ["target", "measured", "goal", "result"]
    inputs = (
        f"{args.trials} random-forest trials (60–120 trees, depth 8–16) on {len(data.X_train):,} train / "
        f"{len(data.X_val):,} validation rows of simulated pump readings"
    )
    print("\n".join(machine.lines()))
    print(f"load average before {load_before}, after {load_after}")
    print(inputs)
    print(text_table(headers, rows))
    print()
    print(text_table(check_headers, checks))
    if not args.no_write_results:
        write_section(
            "tune_search",
            "\n".join(
                [
                    "## Ray Tune search: speed-up and per-trial overhead (`bench/tune_search.py`)",
                    "",
                    f"Run {now_utc()}: `.venv/bin/python bench/tune_search.py "
                    f"{' '.join(sys.argv[1:])}`".replace(" `", "`"),
                    "",
                    "Machine: "
                    + "; ".join(machine.lines())
                    + f"; load average before {load_before}, after {load_after}.",
                    "",
                    f"Input: {inputs}. Ray started before the timers; each trial runs edgeml's "
                    "`fit_trial` with one thread; plain Optuna runs the same objective with the same "
                    "TPE seed.",
                    "",
                    markdown_table(headers, rows),
                    "",
                    markdown_table(check_headers, checks),
                ]
            ),
        )


if __name__ == "__main__":
    main()
