"""The model a device serves, and the holder that swaps it without failing a request.

A :class:`LoadedModel` is a verified bundle folder with its runtime loaded and warmed up.
The :class:`ModelHolder` keeps one reference to the current model; a request reads that
reference once and uses it to the end, so it is answered wholly by the old model or
wholly by the new one, and a swap is a single assignment.

Observers (the health watch, telemetry) hear of every answer and every failed request
through a queue each: the holder builds one entry and hands it to every observer's ``take``
(a deque's bound ``append``, so no Python call per observer on the serving path), and every
:data:`POLL_EVERY` entries it ``poll`` s them, so each counts in bulk when it has enough.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeml.agent.runtime import ModelRuntime
from edgeml.bundle.keys import KeyRing
from edgeml.bundle.manifest import Manifest
from edgeml.bundle.verify import verify_folder
from edgeml.errors import GoldenMismatch

__all__ = [
    "POLL_EVERY",
    "Answered",
    "Failed",
    "GoldenMismatch",
    "LoadedModel",
    "ModelHolder",
    "PredictionObserver",
]

Columns = Mapping[str, Sequence[Any] | np.ndarray]
#: an answered request: (model, its validated input columns, the model's outputs, seconds taken,
#: ``time.monotonic()`` when answered); observers keep references, so none may be changed later
Answered = tuple["LoadedModel", Columns, Mapping[str, np.ndarray], float, float]
#: a failed request: (the model, or None before one is served; kind, see ``observe_error``)
Failed = tuple["LoadedModel | None", str]
#: entries handed over between two polls of the observers
POLL_EVERY = 64


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


_monotonic = time.monotonic  # a global: one lookup less on every request


class PredictionObserver(Protocol):
    @property
    def take(self) -> Callable[[Answered | Failed], object]:
        """Hand one entry over, on the serving path: cheap and thread-safe (a deque's ``append``)."""

    def poll(self) -> None:
        """Called every :data:`POLL_EVERY` entries: count them, or wake whoever counts, if due."""


class ModelHolder:
    """The current model, swapped atomically; observers hear of every prediction."""

    def __init__(self) -> None:
        self.current: LoadedModel | None = None
        self._observers: tuple[PredictionObserver, ...] = ()
        self._takes: tuple[Callable[[Answered | Failed], object], ...] = ()
        # entries since the last poll; increments lost to a race between serving threads only
        # delay a poll a little
        self._unpolled = 0
        self._swap_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.current is not None

    @property
    def observers(self) -> tuple[PredictionObserver, ...]:
        return self._observers

    def watch(self, *observers: PredictionObserver) -> None:
        """Hand every answer and failure to ``observers`` too, from now on."""
        self._observers += observers
        self._takes = tuple(o.take for o in self._observers)

    def swap(self, model: LoadedModel) -> LoadedModel | None:
        """Serve ``model`` from now on; the previous one, which in-flight requests may still use."""
        with self._swap_lock:
            previous, self.current = self.current, model
        return previous

    def observe(
        self, model: LoadedModel, columns: Columns, outputs: Mapping[str, np.ndarray], latency_s: float
    ) -> None:
        """One answered request: its validated inputs, the model's outputs, seconds taken."""
        entry = (model, columns, outputs, latency_s, _monotonic())
        for take in self._takes:
            take(entry)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self.poll()

    def observe_error(self, model: LoadedModel | None, kind: str) -> None:
        """One failed request: ``kind`` is ``bad-input``, ``too-large``, ``not-ready`` or ``runtime``."""
        entry = (model, kind)
        for take in self._takes:
            take(entry)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self.poll()

    def poll(self) -> None:
        """Let every observer count what it was handed, if it has enough to."""
        self._unpolled = 0
        for observer in self._observers:
            observer.poll()
