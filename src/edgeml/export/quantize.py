"""FP16 and INT8 for exported graphs, and the accuracy gate a reduced-precision model must pass.

Only the neural network's dense layers change precision. Preprocessing stays double (it
carries raw sensor values and epoch seconds), and tree or linear ONNX-ML operators have no
int8/fp16 kernels, so those families keep fp32 and the report says so.

INT8 keeps the MLP's first layer (fed by standardised features whose outliers stretch the
int8 range over too few steps for typical rows) and its last layer (tiny; it sets the
probabilities) in fp32; the hidden layers, which hold most of the weights, go to int8.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import UserError

__all__ = ["QUANTIZABLE_FAMILIES", "MetricGate", "to_fp16", "to_int8_onnx", "to_int8_openvino"]

#: families whose graph has layers worth reducing (dense float layers)
QUANTIZABLE_FAMILIES = ("mlp",)


def _dense_layers(model: Any) -> list[str]:
    """Names of the float Gemm/MatMul nodes, in graph order (the MLP's layers)."""
    return [n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul") and n.domain == ""]


def to_fp16(model: Any) -> Any:
    """The float32 part of the graph in float16; inputs, outputs and double preprocessing unchanged."""
    from onnxconverter_common import float16  # type: ignore[import-untyped]

    # onnxconverter-common retypes tensors but not Cast's `to`: casts stay fp32, and it inserts the
    # fp32->fp16 casts in front of the converted layers itself.
    casts = [n.name for n in model.graph.node if n.op_type == "Cast"]
    return float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=casts)


def to_int8_onnx(source: Path, target: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """ONNX Runtime static quantisation, QDQ format, per-tensor int8 weights, MinMax calibration."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    layers = _dense_layers(onnx.load(str(source)))
    if len(layers) < 3:
        raise UserError(
            "int8 keeps the MLP's first and last layers in fp32; this MLP has no hidden layer to quantise",
            hint="train it with layers >= 1, or export it for an fp32 profile",
        )

    class Rows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.items: Iterator[dict[str, np.ndarray]] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(source),
        str(target),
        Rows(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Gemm", "MatMul"],
        nodes_to_exclude=[layers[0], layers[-1]],
        per_channel=False,  # per-tensor scales: per-channel ones cost more bytes than they bought here
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )


def to_int8_openvino(model: Any, calibration: list[dict[str, np.ndarray]]) -> Any:
    """NNCF post-training quantisation of an OpenVINO model's hidden MatMul layers."""
    import nncf  # type: ignore[import-untyped]

    matmuls = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"]
    if len(matmuls) < 3:
        raise UserError(
            "int8 keeps the MLP's first and last layers in fp32; this MLP has no hidden layer to quantise",
            hint="train it with layers >= 1, or export it for an fp32 profile",
        )
    # Left alone, NNCF also quantises preprocessing inputs (raw sensor values before scaling).
    others = sorted(
        {op.get_type_name() for op in model.get_ops()} - {"MatMul", "Parameter", "Result", "Constant"}
    )
    return nncf.quantize(
        model,
        nncf.Dataset(calibration),
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(names=[matmuls[0], matmuls[-1]], types=others),
    )


class _Outputs:
    """An exported model's outputs on the holdout rows, in the shape edgeml's metrics read."""

    def __init__(self, outputs: dict[str, np.ndarray], classes: Any) -> None:
        self.outputs = outputs
        self.classes_ = classes

    def predict(self, X: Any) -> np.ndarray:
        if "label" in self.outputs:
            return np.asarray(self.outputs["label"]).ravel()
        return np.asarray(next(iter(self.outputs.values())), dtype=np.float64).ravel()

    def predict_proba(self, X: Any) -> np.ndarray:
        # float32/fp16 rows sum to 1 only within their precision; log_loss wants float64's
        proba = np.asarray(self.outputs["probabilities"], dtype=np.float64)
        return np.asarray(proba / proba.sum(axis=1, keepdims=True))


class MetricGate:
    """The spec's metric on holdout rows, native against exported; refuses a drop over the tolerance."""

    def __init__(self, spec: Any, tolerance: float) -> None:
        self.task, self.metric, self.mode, self.tolerance = (
            spec.task,
            spec.metric,
            spec.metric_mode,
            tolerance,
        )

    def check(
        self, model: Any, outputs: dict[str, np.ndarray], X: Any, y: np.ndarray, what: str
    ) -> dict[str, Any]:
        from edgeml.train.metrics import evaluate

        native = evaluate(self.task, model, X, y)[self.metric]
        exported = evaluate(self.task, _Outputs(outputs, getattr(model, "classes_", None)), X, y)[self.metric]
        drop = native - exported if self.mode == "max" else exported - native
        figures = {
            "metric": self.metric,
            "native": native,
            "exported": exported,
            "drop": drop,
            "tolerance": self.tolerance,
        }
        if drop > self.tolerance:
            raise UserError(
                f"the {what} loses too much on the holdout rows: {self.metric} native {native:.4f}, "
                f"exported {exported:.4f} (drop {drop:.4g}, allowed {self.tolerance:g} by "
                "gates.quantization_tolerance); nothing was written",
                hint="export for an fp32 profile, or raise gates.quantization_tolerance in the spec",
            )
        return figures
