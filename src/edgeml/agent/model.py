"""The model a device serves, and the holder that swaps it without failing a request.

A :class:`LoadedModel` is a verified bundle folder with its runtime loaded and warmed up.
The :class:`ModelHolder` keeps one reference to the current model; a request reads that
reference once and uses it to the end, so it is answered wholly by the old model or
wholly by the new one, and a swap is a single assignment.

Observers (telemetry, metrics) hear about every prediction and every error.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeml.agent.runtime import ModelRuntime
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.verify import verify_folder

__all__ = ["GoldenMismatch", "LoadedModel", "ModelHolder", "PredictionObserver"]

Columns = Mapping[str, Sequence[Any] | np.ndarray]


class GoldenMismatch(Exception):
    """The staged model does not reproduce its golden outputs: it must not serve."""


class LoadedModel:
    """A verified bundle, loaded on its runtime, with its manifest."""

    def __init__(
        self, folder: Path, manifest: Manifest, *, threads: int = 1, device: str | None = None
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.name = manifest.model
        self.version = manifest.version
        self.runtime = ModelRuntime(folder, manifest, threads=threads, device=device)

    @classmethod
    def open(cls, folder: Path, ring: KeyRing, *, threads: int = 1, device: str | None = None) -> LoadedModel:
        """Verify the folder (signature, files, digests) and load it."""
        return cls(folder, verify_folder(folder, ring), threads=threads, device=device)

    def predict(self, columns: Columns) -> dict[str, np.ndarray]:
        """Outputs for columns of raw input values (already validated)."""
        return self.runtime.run(self.runtime.feeds(columns))

    def smoke_test(self) -> float:
        """Run the golden samples; raise :class:`GoldenMismatch` unless the outputs match. Seconds taken."""
        golden = self.manifest.golden
        start = time.perf_counter()
        outputs = self.runtime.predict_records(golden.inputs)
        elapsed = time.perf_counter() - start
        for name, expected in golden.outputs.items():
            got = outputs.get(name)
            if got is None:
                raise GoldenMismatch(f"the model has no output {name!r}")
            want = np.asarray(expected)
            if want.dtype.kind in "fc":
                diff = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want))) if want.size else 0.0
                if not diff <= golden.tolerance:
                    raise GoldenMismatch(
                        f"output {name!r} differs by {diff:.3g} (tolerance {golden.tolerance:g})"
                    )
            elif [str(v) for v in np.asarray(got).ravel()] != [str(v) for v in want.ravel()]:
                raise GoldenMismatch(
                    f"output {name!r} gives {np.asarray(got).ravel()[:5]}, expected {want.ravel()[:5]}"
                )
        return elapsed

    def warm_up(self, rounds: int = 20) -> None:
        """First runs allocate and tune kernels; do them before taking traffic."""
        for _ in range(rounds):
            self.runtime.predict_records(self.manifest.golden.inputs[:1])
        _freeze_heap()


def _freeze_heap() -> None:
    """Keep what is alive now out of the garbage collector's full passes.

    Once a model is loaded and warm, nearly everything on the heap (modules, the runtime, the
    manifest) lives as long as the process; a full collection walks all of it and stops
    serving for 20-50 ms every ten thousand requests or so. Frozen, those passes take about a
    millisecond. Unfreezing first hands what died since the last freeze (a swapped-out model)
    back to the collector, so swaps do not leak. No full collection here: on a big heap it
    would hold the GIL for tens of milliseconds in the middle of a swap; the young
    generations are collected (cheap), and what older garbage gets frozen meanwhile is
    released at the next swap.
    """
    gc.unfreeze()
    gc.collect(1)
    gc.freeze()


class PredictionObserver(Protocol):
    def observe(
        self, model: LoadedModel, columns: Columns, outputs: Mapping[str, np.ndarray], latency_s: float
    ) -> None:
        """One answered request: its validated inputs, the model's outputs, time spent."""

    def observe_error(self, model: LoadedModel | None, kind: str) -> None:
        """One failed request: ``kind`` is ``bad-input``, ``too-large``, ``not-ready`` or ``runtime``."""


class ModelHolder:
    """The current model, swapped atomically; observers hear of every prediction."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self.observers: list[PredictionObserver] = []
        self._swap_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on; the previous one, which in-flight requests may still use."""
        with self._swap_lock:
            previous, self.current = self.current, model
        return previous

    def observe(
        self, model: LoadedModel, columns: Columns, outputs: Mapping[str, np.ndarray], latency_s: float
    ) -> None:
        for observer in self.observers:
            observer.observe(model, columns, outputs, latency_s)

    def observe_error(self, model: LoadedModel | None, kind: str) -> None:
        for observer in self.observers:
            observer.observe_error(model, kind)
