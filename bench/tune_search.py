"""Ray Tune search: parallel speed-up and per-trial overhead, against plain Optuna.

Targets (issue #4), measured in ONE run on the same data and the same 16 trials:

- speed-up: the search with 2 concurrent trials is ≥ 1.6× faster than with 1;
- overhead: Ray Tune (1 trial at a time) costs ≤ 0.5 s per trial more than plain Optuna
  running the same objective sequentially in one process.

The objective is edgeml's own trial (``fit_trial``: build the pipeline, fit on the train
split, score on validation) for a random forest on simulated pump readings. Ray is
started before any timer.

    .venv/bin/python -m bench.tune_search [--trials 16] [--no-write-results]
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from bench.common import (
    Report,
    Table,
    example_spec,
    parser,
    simulated_training_data,
    smoke_sizes,
    start_ray,
    verdict,
)


def search_spec(trials: int, trees: tuple[int, int]) -> Any:
    """examples/pump-faults.yaml, searching random forests only, ``trials`` trials first in first out."""
    space = {
        "n_estimators": {"low": trees[0], "high": trees[1], "int": True},
        "max_depth": {"low": 8, "high": 16, "int": True},
    }
    search = {"families": ["random_forest"], "trials": trials, "scheduler": "fifo", "seed": 3}
    return example_spec("pump-faults", search={**search, "space": {"random_forest": space, "mlp": None}})


def plain_optuna(spec, data) -> float:  # type: ignore[no-untyped-def]
    import optuna

    from bench.common import fit_trial, suggest

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
    from bench.common import run_search

    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        result = run_search(spec, data, storage=storage, concurrency=concurrency)
        elapsed = time.perf_counter() - start
    assert len(result.trials) == spec.search.trials
    return elapsed


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--trials", type=int, default=16, help="trials per search")
    args = cli.parse_args()
    args.trees, args.readings = (60, 120), 2000
    smoke_sizes(args, trials=2, trees=(5, 10), readings=200)

    import ray
    import torch

    torch.set_num_threads(1)  # as in a Tune trial: one core each
    report = Report("tune_search", "Ray Tune search: speed-up and per-trial overhead", args)
    start_ray()
    try:
        spec = search_spec(args.trials, args.trees)
        data = simulated_training_data(spec, machines=8, readings=args.readings, seed=1)
        optuna_s = plain_optuna(spec, data)
        tune1 = tune(spec, data, 1)
        tune2 = tune(spec, data, 2)
    finally:
        ray.shutdown()
    report.measured()

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
    checks = [
        ["speed-up, 2 vs 1 concurrent", f"{speedup:.2f}×", "≥ 1.6×", verdict(speedup, 1.6)],
        [
            "Tune overhead per trial vs plain Optuna",
            f"{overhead:+.2f} s",
            "≤ 0.5 s",
            verdict(overhead, 0.5, higher_is_better=False),
        ],
    ]
    report.publish(
        [
            f"Input: {args.trials} random-forest trials ({args.trees[0]}–{args.trees[1]} trees, depth 8–16) "
            f"on {len(data.X_train):,} train / {len(data.X_val):,} validation rows of simulated pump "
            "readings, with the features of `examples/pump-faults.yaml`. Ray started before the timers; "
            "each trial runs edgeml's `fit_trial` with one thread; plain Optuna runs the same objective with "
            "the same TPE seed.",
            Table(["run", "wall s", "s per trial"], rows),
            report.checks(checks),
        ]
    )


if __name__ == "__main__":
    main()
