"""Run a bundle's model: ONNX Runtime or OpenVINO, as its manifest says.

Inputs arrive as records or columns of raw values; :meth:`ModelRuntime.feeds` turns them
into the one [N, 1] tensor per input the exported graph takes, in the element type the
graph declares. Used by the agent, ``edgeml serve`` and the bundle builder (for the golden
samples), so every one of them runs a model the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.agent.fastpath import session_run
from edgeml.bundle.manifest import Manifest

__all__ = ["ModelRuntime"]

_NUMPY = {"float64": np.float64, "float32": np.float32}


class ModelRuntime:
    """One loaded model. ``threads`` and ``device`` come from the firmware profile."""

    def __init__(
        self, folder: Path, manifest: Manifest, *, threads: int = 1, device: str | None = None
    ) -> None:
        self.manifest = manifest
        self.inputs = manifest.inputs
        path = folder / manifest.model_file.path
        self._openvino = manifest.runtime != "onnxruntime"
        if not self._openvino:
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
            # outputs that are not tensors (ONNX sequences or maps) are made numpy arrays
            self._convert = not all(o.type.startswith("tensor(") for o in self._session.get_outputs())
            self._session_run = session_run(self._session) or self._session.run
        else:
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

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (the runtimes do not agree on their order)."""
        if self._openvino:
            result = self._compiled(dict(feeds))
            return {out.get_any_name(): np.asarray(result[out]) for out in self._compiled.outputs}
        results = self._session_run(self.output_names, feeds if isinstance(feeds, dict) else dict(feeds))
        if self._convert:
            return {name: np.asarray(out) for name, out in zip(self.output_names, results, strict=True)}
        return dict(zip(self.output_names, results, strict=True))

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        return self.run(self.feeds({f.name: [r.get(f.name) for r in records] for f in self.inputs}))
