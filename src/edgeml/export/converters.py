"""skl2onnx converters for edgeml's own estimators and transformers.

- :class:`~edgeml.train.pipeline.RowFeatures`: each expression as ONNX operators. Every
  construct of the expression language has an exact counterpart (numpy's semantics are
  kept where ONNX differs: ``%`` takes the divisor's sign; time parts come from epoch
  seconds by floor arithmetic, the month by the civil-from-days algorithm). Expressions
  are computed in double, as in numpy (epoch seconds need it).
- the PyTorch MLP: its numpy weights as Gemm and Relu nodes, then Softmax for a classifier.
- scikit-learn's SimpleImputer, as Where(IsNaN): unlike ONNX Runtime's ``Imputer`` it runs
  in double, so numeric inputs can stay double and trees see exactly what scikit-learn
  gives them (a float32 copy of the double-precision scaled value).
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np

from edgeml.features.expr import bucket_edges, parse_expression

__all__ = ["register"]

_REGISTERED = False
DOUBLE, FLOAT, BOOL = 11, 1, 9  # ONNX TensorProto element types


def _c(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float64)


def _keep_nan(ops: Any, opv: int, result: Any, *inputs: Any) -> Any:
    """NaN where any input is NaN, as numpy gives (ONNX Min/Max/Greater may drop it)."""
    missing: Any = None
    for value in inputs:
        isnan = ops.OnnxIsNaN(value, op_version=opv)
        missing = isnan if missing is None else ops.OnnxOr(missing, isnan, op_version=opv)
    return ops.OnnxWhere(missing, _c(float("nan")), result, op_version=opv)


def _floor_div(ops: Any, opv: int, a: Any, b: float) -> Any:
    return ops.OnnxFloor(ops.OnnxDiv(a, _c(b), op_version=opv), op_version=opv)


def _time_part(ops: Any, opv: int, name: str, seconds: Any) -> Any:
    days = _floor_div(ops, opv, seconds, 86400.0)
    if name == "hour":
        within = ops.OnnxSub(seconds, ops.OnnxMul(days, _c(86400.0), op_version=opv), op_version=opv)
        return _floor_div(ops, opv, within, 3600.0)
    if name in ("day_of_week", "is_weekend"):
        shifted = ops.OnnxAdd(days, _c(3.0), op_version=opv)  # 1970-01-01 was a Thursday; Monday = 0
        weeks = ops.OnnxMul(_floor_div(ops, opv, shifted, 7.0), _c(7.0), op_version=opv)
        dow = ops.OnnxSub(shifted, weeks, op_version=opv)
        if name == "day_of_week":
            return dow
        return ops.OnnxCast(ops.OnnxGreaterOrEqual(dow, _c(5.0), op_version=opv), to=DOUBLE, op_version=opv)
    z = ops.OnnxAdd(days, _c(719468.0), op_version=opv)  # civil_from_days (H. Hinnant)
    era = _floor_div(ops, opv, z, 146097.0)
    doe = ops.OnnxSub(z, ops.OnnxMul(era, _c(146097.0), op_version=opv), op_version=opv)
    yoe_num = ops.OnnxAdd(
        ops.OnnxSub(
            ops.OnnxSub(doe, _floor_div(ops, opv, doe, 1460.0), op_version=opv),
            _floor_div(ops, opv, doe, 146096.0),
            op_version=opv,
        ),
        _floor_div(ops, opv, doe, 36524.0),
        op_version=opv,
    )
    yoe = _floor_div(ops, opv, yoe_num, 365.0)
    year_start = ops.OnnxSub(
        ops.OnnxAdd(
            ops.OnnxMul(yoe, _c(365.0), op_version=opv), _floor_div(ops, opv, yoe, 4.0), op_version=opv
        ),
        _floor_div(ops, opv, yoe, 100.0),
        op_version=opv,
    )
    doy = ops.OnnxSub(doe, year_start, op_version=opv)
    mp = _floor_div(
        ops, opv, ops.OnnxAdd(ops.OnnxMul(doy, _c(5.0), op_version=opv), _c(2.0), op_version=opv), 153.0
    )
    return ops.OnnxWhere(
        ops.OnnxLess(mp, _c(10.0), op_version=opv),
        ops.OnnxAdd(mp, _c(3.0), op_version=opv),
        ops.OnnxSub(mp, _c(9.0), op_version=opv),
        op_version=opv,
    )


def _expr(ops: Any, opv: int, node: ast.expr, cols: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return _c(float(node.value))  # type: ignore[arg-type]
    if isinstance(node, ast.Name):
        return cols[node.id]
    if isinstance(node, ast.UnaryOp):
        inner = _expr(ops, opv, node.operand, cols)
        return ops.OnnxNeg(inner, op_version=opv) if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        a, b = _expr(ops, opv, node.left, cols), _expr(ops, opv, node.right, cols)
        if isinstance(node.op, ast.Mod):  # numpy's mod takes the divisor's sign; ONNX fmod the dividend's
            first = ops.OnnxMod(a, b, fmod=1, op_version=opv)
            return ops.OnnxMod(ops.OnnxAdd(first, b, op_version=opv), b, fmod=1, op_version=opv)
        op = {
            ast.Add: ops.OnnxAdd,
            ast.Sub: ops.OnnxSub,
            ast.Mult: ops.OnnxMul,
            ast.Div: ops.OnnxDiv,
            ast.Pow: ops.OnnxPow,
        }[type(node.op)]
        return op(a, b, op_version=opv)
    assert isinstance(node, ast.Call)
    assert isinstance(node.func, ast.Name)
    name, args = node.func.id, node.args
    if name in ("hour", "day_of_week", "month", "is_weekend"):
        assert isinstance(args[0], ast.Name)
        return _time_part(ops, opv, name, cols[args[0].id])
    if name == "bucketize":
        x = _expr(ops, opv, args[0], cols)
        edges = bucket_edges(args[1])
        assert edges is not None  # the parser guarantees a list of numbers
        total: Any = None
        for edge in edges:  # searchsorted(side="right"): how many edges are <= x
            step = ops.OnnxCast(
                ops.OnnxGreaterOrEqual(x, _c(edge), op_version=opv), to=DOUBLE, op_version=opv
            )
            total = step if total is None else ops.OnnxAdd(total, step, op_version=opv)
        return _keep_nan(ops, opv, total, x)
    v = [_expr(ops, opv, a, cols) for a in args]
    if name == "log1p":
        return ops.OnnxLog(ops.OnnxAdd(v[0], _c(1.0), op_version=opv), op_version=opv)
    unary = {"log": ops.OnnxLog, "exp": ops.OnnxExp, "sqrt": ops.OnnxSqrt, "abs": ops.OnnxAbs}
    if name in unary:
        return unary[name](v[0], op_version=opv)
    if name == "minimum":
        return _keep_nan(ops, opv, ops.OnnxMin(v[0], v[1], op_version=opv), *v)
    if name == "maximum":
        return _keep_nan(ops, opv, ops.OnnxMax(v[0], v[1], op_version=opv), *v)
    clipped = ops.OnnxMin(ops.OnnxMax(v[0], v[1], op_version=opv), v[2], op_version=opv)
    return _keep_nan(ops, opv, clipped, *v)


def _row_features_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import DoubleTensorType

    n = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = DoubleTensorType([n, len(operator.raw_operator.features)])


def _row_features(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra import onnx_ops as ops

    model, opv = operator.raw_operator, container.target_opset
    # The branch's columns arrive as one input per column or as one matrix: either way, in order.
    parts = [ops.OnnxCast(var, to=DOUBLE, op_version=opv) for var in operator.inputs]
    matrix = parts[0] if len(parts) == 1 else ops.OnnxConcat(*parts, axis=1, op_version=opv)
    cols = {
        name: ops.OnnxGather(matrix, np.array([i], dtype=np.int64), axis=1, op_version=opv)
        for i, name in enumerate(model.columns)
    }
    out = []
    for name, source in model.features:
        cols[name] = _expr(ops, opv, parse_expression(source).tree, cols)
        out.append(cols[name])
    joined = out[0] if len(out) == 1 else ops.OnnxConcat(*out, axis=1, op_version=opv)
    ops.OnnxIdentity(joined, op_version=opv, output_names=operator.outputs[:1]).add_to(scope, container)


def _mlp_layers(ops: Any, opv: int, model: Any, x: Any) -> Any:
    weights = [np.asarray(w, dtype=np.float32) for w in model.weights_]
    h = x
    n_linear = len(weights) // 2
    for i in range(n_linear):
        w, b = weights[2 * i], weights[2 * i + 1]  # torch Linear: weight [out, in], bias [out]
        h = ops.OnnxGemm(h, w, b, transB=1, op_version=opv)
        if i < n_linear - 1:
            h = ops.OnnxRelu(h, op_version=opv)  # dropout is the identity at inference
    return h


def _mlp_regressor_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([operator.inputs[0].get_first_dimension(), 1])


def _mlp_regressor(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra import onnx_ops as ops

    opv = container.target_opset
    x = ops.OnnxCast(operator.inputs[0], to=FLOAT, op_version=opv)
    out = _mlp_layers(ops, opv, operator.raw_operator, x)
    ops.OnnxIdentity(out, op_version=opv, output_names=operator.outputs[:1]).add_to(scope, container)


def _mlp_classifier_shape(operator: Any) -> None:
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    n = operator.inputs[0].get_first_dimension()
    classes = operator.raw_operator.classes_
    label = StringTensorType if np.asarray(classes).dtype.kind in "OUS" else Int64TensorType
    operator.outputs[0].type = label([n])
    operator.outputs[1].type = FloatTensorType([n, len(classes)])


def _mlp_classifier(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra import onnx_ops as ops

    model, opv = operator.raw_operator, container.target_opset
    x = ops.OnnxCast(operator.inputs[0], to=FLOAT, op_version=opv)
    proba = ops.OnnxSoftmax(
        _mlp_layers(ops, opv, model, x), axis=1, op_version=opv, output_names=operator.outputs[1:2]
    )
    index = ops.OnnxArgMax(proba, axis=1, keepdims=0, op_version=opv)
    classes = np.asarray(model.classes_)
    table = classes.astype(str) if classes.dtype.kind in "OUS" else classes.astype(np.int64)
    label = ops.OnnxGather(table, index, axis=0, op_version=opv, output_names=operator.outputs[:1])
    proba.add_to(scope, container)
    label.add_to(scope, container)


def _imputer_shape(operator: Any) -> None:
    n = operator.inputs[0].get_first_dimension()
    width = len(operator.raw_operator.statistics_)
    operator.outputs[0].type = type(operator.inputs[0].type)([n, width])


def _imputer(scope: Any, operator: Any, container: Any) -> None:
    """Numeric SimpleImputer as Where(IsNaN): works in double too (ONNX Runtime's Imputer is float-only)."""
    from skl2onnx.algebra import onnx_ops as ops
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    model, opv = operator.raw_operator, container.target_opset
    parts = list(operator.inputs)
    x = parts[0] if len(parts) == 1 else ops.OnnxConcat(*parts, axis=1, op_version=opv)
    if isinstance(operator.inputs[0].type, StringTensorType):  # a missing string arrives as ""
        fill = np.asarray(model.statistics_, dtype=object).astype(str).reshape(1, -1)
        # ONNX Equal takes strings only from opset 19; ONNX-ML's LabelEncoder flags "" on any opset.
        flag = ops.OnnxLabelEncoder(
            x,
            keys_strings=[""],
            values_int64s=[1],
            default_int64=0,
            op_version=int(container.target_opset_any_domain("ai.onnx.ml")),
        )
        missing = ops.OnnxCast(flag, to=BOOL, op_version=opv)
    else:
        dtype = np.float64 if isinstance(operator.inputs[0].type, DoubleTensorType) else np.float32
        fill = np.asarray(model.statistics_, dtype=dtype).reshape(1, -1)
        missing = ops.OnnxIsNaN(x, op_version=opv)
    ops.OnnxWhere(missing, fill, x, op_version=opv, output_names=operator.outputs[:1]).add_to(
        scope, container
    )


def register() -> None:
    """Teach skl2onnx about edgeml's estimators and transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from sklearn.impute import SimpleImputer

    from edgeml.train.mlp import MLPClassifierTorch, MLPRegressorTorch
    from edgeml.train.pipeline import RowFeatures

    update_registered_converter(RowFeatures, "EdgemlRowFeatures", _row_features_shape, _row_features)
    update_registered_converter(SimpleImputer, "SklearnImputer", _imputer_shape, _imputer, overwrite=True)
    update_registered_converter(MLPRegressorTorch, "EdgemlMLPRegressor", _mlp_regressor_shape, _mlp_regressor)
    update_registered_converter(
        MLPClassifierTorch,
        "EdgemlMLPClassifier",
        _mlp_classifier_shape,
        _mlp_classifier,
        options={"zipmap": [False, True], "nocl": [False, True]},
    )
    _REGISTERED = True
