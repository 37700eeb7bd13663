"""The support matrix: what reaches a device, as one table that the code, the tests and the docs read.

A cell is a task, a model family, the input kinds its data has, a runtime (each firmware
profile runs one) and a serving path. This module says which cells run and, for those that
cannot, why and what to use instead. ``edgeml spec check`` refuses a spec whose families or
inputs a listed profile cannot run (before any training), the export refuses them too,
``tests/test_support.py`` runs every runnable cell from a spec through ``edgeml pipeline run``
to a running agent, and ``edgeml spec matrix`` writes docs/support-matrix.md from these cells
(a test fails when the page is stale).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeml.spec.models import FAMILIES, Task

__all__ = [
    "INPUT_KINDS",
    "RUNTIMES",
    "SERVING_PATHS",
    "Cell",
    "cells",
    "family_refusal",
    "input_kind",
    "input_refusal",
    "render_markdown",
    "task_alternatives",
]

RUNTIMES = ("onnxruntime", "openvino")
#: where a device's model answers: the agent's JSON records, its Open Inference Protocol v2 and its
#: MQTT mode (`edgeml serve` answers with the agent's own code, tests/serve proves it)
SERVING_PATHS = ("agent /predict", "agent OIP v2", "agent MQTT")
#: input kinds, by the schema types they cover
INPUT_KINDS: Mapping[str, tuple[str, ...]] = {
    "numeric": ("float", "int", "bool"),
    "categorical": ("category", "string"),
    "timestamp": ("timestamp",),  # feeds row features (hour(ts), ...)
    "text": ("text",),
}
#: the input kinds each task's pipeline encodes (text only in text classification)
TASK_INPUTS: Mapping[Task, tuple[str, ...]] = {
    "classification": ("numeric", "categorical", "timestamp"),
    "regression": ("numeric", "categorical", "timestamp"),
    "anomaly": ("numeric", "categorical", "timestamp"),
    "clustering": ("numeric", "categorical", "timestamp"),
    "text-classification": ("text", "numeric", "categorical"),
}

_TREES = (
    "OpenVINO computes in float32 only (double inputs included), so a value near a split threshold "
    "can take the other branch: the parity gate (1e-4) cannot be guaranteed for tree ensembles"
)
_FAMILY_REFUSALS: Mapping[tuple[str, str], str] = {
    ("openvino", "logistic"): "its ONNX graph needs the ONNX-ML LinearClassifier, which OpenVINO lacks",
    ("openvino", "random_forest"): _TREES,
    ("openvino", "hist_gradient_boosting"): _TREES,
    ("openvino", "isolation_forest"): _TREES,
    (
        "openvino",
        "tfidf_linear",
    ): "its graph tokenises strings (StringNormalizer, Tokenizer), which OpenVINO lacks",
}
_INPUT_REFUSALS: Mapping[tuple[str, str], str] = {
    ("openvino", "categorical"): "OpenVINO takes no string inputs (one-hot encoding reads strings)",
    ("openvino", "text"): "OpenVINO takes no string inputs",
    ("openvino", "timestamp"): (
        "OpenVINO's CPU plugin runs double as float32, which cannot hold epoch seconds to the second"
    ),
}


def family_refusal(runtime: str, family: str) -> str | None:
    """Why ``runtime`` cannot run ``family`` (None: it can)."""
    return _FAMILY_REFUSALS.get((runtime, family))


def input_refusal(runtime: str, kind: str) -> str | None:
    """Why ``runtime`` cannot take inputs of ``kind`` (None: it can)."""
    return _INPUT_REFUSALS.get((runtime, kind))


def input_kind(column_type: str) -> str:
    """The input kind of a schema column type."""
    return next(kind for kind, types in INPUT_KINDS.items() if column_type in types)


def task_alternatives(task: Task, runtime: str) -> list[str]:
    """The task's families that ``runtime`` runs."""
    return [f for f in FAMILIES[task] if family_refusal(runtime, f) is None]


@dataclass(frozen=True)
class Cell:
    task: Task
    family: str
    runtime: str
    inputs: tuple[str, ...]  # input kinds
    refused: str | None  # why not, or None when it runs

    @property
    def id(self) -> str:
        return f"{self.task}-{self.family}-{self.runtime}"


def cells() -> list[Cell]:
    """Every task × family × runtime, with the input kinds it takes (or why it cannot run)."""
    out = []
    for task, families in FAMILIES.items():
        for family in families:
            for runtime in RUNTIMES:
                refused = family_refusal(runtime, family)
                kinds = tuple(k for k in TASK_INPUTS[task] if input_refusal(runtime, k) is None)
                if refused is None and not kinds:  # pragma: no cover - every runtime takes numbers
                    refused = "no input kind this task needs"
                if refused is None and task == "text-classification" and "text" not in kinds:
                    refused = input_refusal(runtime, "text")
                out.append(Cell(task, family, runtime, kinds if refused is None else (), refused))
    return out


def _profiles_by_runtime(profiles: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {r: [] for r in RUNTIMES}
    for name, runtime in profiles:
        by.setdefault(runtime, []).append(name)
    return by


def render_markdown(profiles: Iterable[tuple[str, str]]) -> str:
    """docs/support-matrix.md: ``profiles`` are the shipped (name, runtime) pairs."""
    by_runtime = _profiles_by_runtime(profiles)
    lines = [
        "# Support matrix",
        "",
        "<!-- generated by `edgeml spec matrix` from src/edgeml/support.py; do not edit -->",
        "",
        "What reaches a device: each task and model family, the input kinds it takes, on each runtime",
        "(a firmware profile names one), served over " + ", ".join(SERVING_PATHS) + ".",
        "A cell that runs is proven end to end by `tests/test_support.py`: a spec is run through",
        "`edgeml pipeline run` to a signed bundle, and a running agent answers fresh rows (with gaps",
        "and an unseen category) over each path with the native model's label, probabilities (within",
        "1e-4), value, cluster or anomaly decision. A refused cell is refused by `edgeml spec check`",
        "before any training. `edgeml serve` answers with the agent's own code (tests/serve).",
        "",
        "Runtimes and the shipped profiles that use them:",
        "",
    ]
    for runtime in RUNTIMES:
        lines.append(f"- **{runtime}**: {', '.join(by_runtime.get(runtime, [])) or '(none shipped)'}")
    lines += [
        "",
        "Input kinds: **numeric** = float, int, bool (missing values are imputed); **categorical** =",
        "category, string (missing values are their own category; a category not seen in training",
        "is the unknown bucket: all one-hot columns zero); **timestamp** = row features computed from",
        "a timestamp (`hour(ts)`, ...); **text** = TF-IDF words (ASCII letters and digits, lowercased",
        "in the C locale, so every host tokenises alike; a missing text is an empty document).",
        "Precision: int8 and fp16 profiles quantise neural-network layers (mlp) behind the accuracy",
        "gate; other families are exported in fp32 on them.",
        "",
        "| task | family | " + " | ".join(RUNTIMES) + " |",
        "|---|---|" + "---|" * len(RUNTIMES),
    ]
    table: dict[tuple[str, str], dict[str, Cell]] = {}
    for cell in cells():
        table.setdefault((cell.task, cell.family), {})[cell.runtime] = cell
    for (task, family), per_runtime in table.items():
        row = []
        for runtime in RUNTIMES:
            cell = per_runtime[runtime]
            if cell.refused is None:
                row.append("✅ " + ", ".join(cell.inputs))
            else:
                row.append(f"❌ {cell.refused}")
        lines.append(f"| {task} | {family} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Serving paths answer alike: `/predict` gives per row `label` and `probabilities` (classifiers),",
        "the value under the target's name (regression), `cluster` and `distances` (clustering), or the",
        "decision under the target's name and `anomaly_score` (anomaly); OIP v2 gives the same tensors",
        "by those names; MQTT publishes the same per reading (`label` and `probabilities`, or",
        "`prediction`: the first output, and `outputs`: all of them).",
        "",
    ]
    return "\n".join(lines)
