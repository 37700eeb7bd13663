"""Run a bundle's model: ONNX Runtime or OpenVINO, as its manifest says.

Inputs arrive as records or columns of raw values; :meth:`ModelRuntime.feeds` turns them
into the one [N, 1] tensor per input the exported graph takes, in the element type the
graph declares. Used by the agent, ``edgeml serve`` and the bundle builder (for the golden
samples), so every one of them runs a model the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.bundle.manifest import Manifest

__all__ = ["ModelRuntime"]

_NUMPY = {"float64": np.float64, "float32": np.float32}
#: outputs up to this many get a generated dict display (see _namer)
_NAMED_MAX = 16


def _namer(names: Sequence[str], *, convert: bool) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function from the runtime's results, in ``names`` order, to a dict by name.

    For the usual few outputs of numpy tensors it is a generated dict display
    (``{'label': r[0], 'probabilities': r[1]}``), a third of ``dict(zip(names, results))``'s
    cost: a sixth of a microsecond on every request of a small model. Names are written with
    ``repr``, so any string is a valid literal. Outputs that are not tensors (ONNX sequences
    or maps) are made numpy arrays.
    """
    keys = list(names)
    if convert or len(keys) > _NAMED_MAX:
        if convert:
            return lambda results: dict(zip(keys, (np.asarray(o) for o in results), strict=True))
        return lambda results: dict(zip(keys, results, strict=True))
    display = ", ".join(f"{name!r}: r[{i}]" for i, name in enumerate(keys))
    named: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda r: {{{display}}}")  # noqa: S307 (reprs only)
    return named


class ModelRuntime:
    """One loaded model. ``threads`` and ``device`` come from the firmware profile."""

    def __init__(
        self, folder: Path, manifest: Manifest, *, threads: int = 1, device: str | None = None
    ) -> None:
        self.manifest = manifest
        self.inputs = manifest.inputs
        path = folder / manifest.model_file.path
        if manifest.runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared CPUs
            provider = device or "CPUExecutionProvider"
            if provider not in ort.get_available_providers():
                provider = "CPUExecutionProvider"
            self.provider = provider
            self._session = ort.InferenceSession(str(path), opts, providers=[provider])
            self.output_names = [o.name for o in self._session.get_outputs()]
            tensors_out = all(o.type.startswith("tensor(") for o in self._session.get_outputs())
            self._named = _namer(self.output_names, convert=not tensors_out)
            self._ep_fail: type[Exception] = ort.capi.onnxruntime_pybind11_state.EPFail
            self._run = self._session_run()
        else:
            self._run = None
            import openvino as ov

            core = ov.Core()
            self.provider = device or "CPU"
            self._compiled = core.compile_model(
                core.read_model(str(path)),
                self.provider,
                {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
            )
            self.output_names = [o.get_any_name() for o in self._compiled.outputs]

    def feeds(self, columns: Mapping[str, Sequence[Any] | np.ndarray]) -> dict[str, np.ndarray]:
        """Model inputs from columns of raw values (None and NaN are missing)."""
        out = {}
        for field in self.inputs:
            values = columns[field.name]
            if field.dtype == "string":
                out[field.name] = np.array(
                    [["" if v is None else str(v)] for v in values], dtype=object
                ).reshape(-1, 1)
            else:
                array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                out[field.name] = array.astype(_NUMPY[field.dtype]).reshape(-1, 1)
        return out

    def _session_run(self) -> Any:
        """The session's own ``run`` (C++), or None to go through ``InferenceSession.run``.

        ``InferenceSession.run`` is a Python wrapper that checks every input is fed and that no
        OrtValue belongs to another session, then calls the C++ ``run``. Feeds built from a
        :class:`~edgeml.agent.inputs.Schema` hold every input as a numpy array, so those checks
        cannot fail here (the C++ side checks inputs again anyway); skipping them saves about
        2 µs a call, which on a small model is a sixth of the model's own time.
        """
        session = getattr(self._session, "_sess", None)
        return getattr(session, "run", None)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (the runtimes do not agree on their order)."""
        run = self._run
        if run is not None:  # ONNX Runtime, through the session's C++ run
            if not isinstance(feeds, dict):
                feeds = dict(feeds)
            try:
                results = run(self.output_names, feeds, None)
            except self._ep_fail:
                # the provider failed: the wrapper falls back to the CPU provider, making a
                # new C++ session, which is the one to call from now on
                results = self._session.run(self.output_names, feeds)
                self._run = self._session_run()
        elif self.manifest.runtime == "onnxruntime":
            results = self._session.run(self.output_names, dict(feeds))
        else:
            result = self._compiled(dict(feeds))
            return {out.get_any_name(): np.asarray(result[out]) for out in self._compiled.outputs}
        return self._named(results)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return self.run(self.feeds({f.name: [r.get(f.name) for r in records] for f in self.inputs}))
