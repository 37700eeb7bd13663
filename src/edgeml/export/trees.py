"""Tree ensembles and isolation forests as standard ONNX operators (tree traversal).

Used on every runtime: exact where ONNX-ML's TreeEnsemble operators (and skl2onnx's converters
for them) are not; an isolation forest's leaves hold their normalised path lengths, summed
into scikit-learn's ``score_samples`` and compared with the calibrated threshold.

Every tree walks all rows at once: one Gather/GatherElements/LessOrEqual/Where step per
level (Hummingbird's "tree traversal" strategy), so memory stays linear in the node count
where the GEMM strategy needs one dense matrix per tree. Leaves point to themselves, so
shallow trees simply stay put while deeper ones finish.

Splits follow scikit-learn exactly. Forests compare ``float32(x) <= threshold``;
a float32 ``x`` is ``<=`` a double threshold iff it is ``<=`` the largest float32 not above
it, so thresholds are rounded *down* to float32 and the walk is exact in float32 (which is
all OpenVINO's CPU plugin computes in). HistGradientBoosting compares doubles: exact where
the runtime runs double (ONNX Runtime); OpenVINO's float32 preprocessing is why edgeml.support
refuses tree ensembles there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeml.errors import UserError

__all__ = ["append_trees", "is_tree_ensemble"]

_FOREST = ("RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor")
_HGB = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


_IFOREST = ("IsolationForestThreshold",)


def is_tree_ensemble(estimator: Any) -> bool:
    return type(estimator).__name__ in _FOREST + _HGB + _IFOREST


@dataclass
class _Nodes:
    """All trees' nodes in one table; children index the table itself."""

    feature: np.ndarray  # int64 [M]
    threshold: np.ndarray  # [M]
    left: np.ndarray  # int64 [M]
    right: np.ndarray  # int64 [M]
    missing_left: np.ndarray  # bool [M]
    value: np.ndarray  # [M, K], what a leaf adds to the output
    roots: np.ndarray  # int64 [T]
    depth: int


def _stack(trees: list[dict[str, np.ndarray]], depth: int) -> _Nodes:
    offset, roots, parts = 0, [], []
    for tree in trees:
        n = len(tree["feature"])
        leaf = tree["leaf"]
        own = np.arange(n, dtype=np.int64)
        parts.append(
            {
                "feature": np.where(leaf, 0, tree["feature"]).astype(np.int64),
                "threshold": np.where(leaf, 0.0, tree["threshold"]),
                "left": np.where(leaf, own, tree["left"]).astype(np.int64) + offset,
                "right": np.where(leaf, own, tree["right"]).astype(np.int64) + offset,
                "missing_left": tree["missing_left"].astype(bool),
                "value": tree["value"],
            }
        )
        roots.append(offset)
        offset += n
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _Nodes(roots=np.asarray(roots, dtype=np.int64), depth=depth, **cat)


def _forest(est: Any) -> _Nodes:
    trees = []
    for member in est.estimators_:
        t = member.tree_
        value = t.value[:, 0, :].astype(np.float64)
        if value.shape[1] > 1:  # classifier: each tree votes its leaf's class proportions
            value = value / np.clip(value.sum(axis=1, keepdims=True), 1e-300, None)
        missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=bool))
        trees.append(
            {
                "feature": t.feature,
                "threshold": t.threshold,
                "left": t.children_left,
                "right": t.children_right,
                "leaf": t.children_left == -1,
                "missing_left": np.asarray(missing, dtype=bool),
                "value": value,
            }
        )
    return _stack(trees, max(int(m.tree_.max_depth) for m in est.estimators_))


def _iforest(est: Any) -> _Nodes:
    """Each leaf holds its share of the mean path length, normalised: their sum over the trees is
    the exponent of scikit-learn's score, ``2 ** -sum`` (``IsolationForest._compute_score_samples``)."""
    from sklearn.ensemble._iforest import _average_path_length

    forest = est.forest_
    subsample = forest._max_features != forest.n_features_in_
    denominator = len(forest.estimators_) * float(_average_path_length([forest._max_samples])[0])
    trees = []
    for k, member in enumerate(forest.estimators_):
        t = member.tree_
        depth = forest._decision_path_lengths[k] + forest._average_path_length_per_tree[k] - 1.0
        feature = t.feature
        if subsample:  # the tree indexes its own subset of the columns
            used = np.asarray(forest.estimators_features_[k])
            feature = np.where(feature >= 0, used[np.clip(feature, 0, None)], feature)
        trees.append(
            {
                "feature": feature,
                "threshold": t.threshold,
                "left": t.children_left,
                "right": t.children_right,
                "leaf": t.children_left == -1,
                "missing_left": np.zeros(t.node_count, dtype=bool),
                "value": (depth / denominator if denominator else np.ones(t.node_count)).reshape(-1, 1),
            }
        )
    return _stack(trees, max(int(m.tree_.max_depth) for m in forest.estimators_))


def _hgb(est: Any) -> _Nodes:
    if getattr(est, "_preprocessor", None) is not None or est.is_categorical_ is not None:
        raise UserError(
            "this hist_gradient_boosting model splits on native categorical features, which the "
            "tensor conversion does not implement",
            hint="one-hot encode categories (features.one_hot: auto) and retrain",
        )
    k = est.n_trees_per_iteration_
    trees = []
    for iteration in est._predictors:
        for column, predictor in enumerate(iteration):
            nodes = predictor.nodes
            value = np.zeros((len(nodes), k))
            value[:, column] = np.where(nodes["is_leaf"], nodes["value"], 0.0)
            trees.append(
                {
                    "feature": nodes["feature_idx"],
                    "threshold": nodes["num_threshold"],
                    "left": nodes["left"],
                    "right": nodes["right"],
                    "leaf": nodes["is_leaf"].astype(bool),
                    "missing_left": nodes["missing_go_to_left"],
                    "value": value,
                }
            )
    depth = max(int(p.nodes["depth"].max()) for it in est._predictors for p in it)
    return _stack(trees, depth)


def _floor_f32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each value."""
    out = values.astype(np.float32)
    above = out.astype(np.float64) > values
    out[above] = np.nextafter(out[above], np.float32(-np.inf))
    return out


def append_trees(model: Any, features: str, estimator: Any, float32: bool, opset: int) -> Any:
    """Append ``estimator`` to ``model`` (an ONNX graph whose output ``features`` is its input matrix).

    Outputs: ``label`` and ``probabilities`` for a classifier (as skl2onnx names them),
    ``trees_output`` for a regressor (the export names it after the target).
    """
    from onnx import TensorProto, helper, numpy_helper

    kind = type(estimator).__name__
    hgb = kind in _HGB
    nodes = _iforest(estimator) if kind in _IFOREST else _hgb(estimator) if hgb else _forest(estimator)
    if hgb and kind.endswith("Regressor") and estimator.loss != "squared_error":
        raise UserError(f"hist_gradient_boosting with loss {estimator.loss!r} has no tensor conversion yet")
    # Forests split on float32 values (exact in float32); boosting on doubles where the runtime can.
    compare_f32 = float32 or not hgb
    dtype = np.float32 if compare_f32 else np.float64
    threshold = _floor_f32(nodes.threshold) if not hgb or float32 else nodes.threshold
    value_dtype = np.float32 if float32 else np.float64

    graph = model.graph
    made: list[Any] = []
    consts: list[Any] = []

    def const(name: str, array: Any) -> str:
        consts.append(numpy_helper.from_array(np.asarray(array), f"trees_{name}"))
        return f"trees_{name}"

    def node(op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = f"trees_{name}"
        made.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    elem = TensorProto.FLOAT if compare_f32 else TensorProto.DOUBLE
    x = node("Cast", [features], "x", to=elem)
    feature_t, threshold_t = const("feature", nodes.feature), const("threshold", threshold.astype(dtype))
    left_t, right_t = const("left", nodes.left), const("right", nodes.right)
    missing_t = const("missing_left", nodes.missing_left)
    rows = node("Slice", [node("Shape", [x], "shape"), const("zero", [0]), const("one", [1])], "rows")
    size = node("Concat", [rows, const("n_trees", [len(nodes.roots)])], "size", axis=0)
    idx = node("Expand", [const("roots", nodes.roots.reshape(1, -1)), size], "idx0")
    for level in range(nodes.depth):
        at = node("GatherElements", [x, node("Gather", [feature_t, idx], f"f{level}")], f"xv{level}", axis=1)
        below = node("LessOrEqual", [at, node("Gather", [threshold_t, idx], f"t{level}")], f"le{level}")
        missing = node(
            "And",
            [node("IsNaN", [at], f"nan{level}"), node("Gather", [missing_t, idx], f"ml{level}")],
            f"m{level}",
        )
        go_left = node("Or", [below, missing], f"go{level}")
        idx = node(
            "Where",
            [
                go_left,
                node("Gather", [left_t, idx], f"l{level}"),
                node("Gather", [right_t, idx], f"r{level}"),
            ],
            f"idx{level + 1}",
        )
    leaves = node("Gather", [const("value", nodes.value.astype(value_dtype)), idx], "leaves")
    total = node("ReduceSum", [leaves, const("axis", [1])], "sum", keepdims=0)
    if hgb:
        baseline = np.asarray(estimator._baseline_prediction, dtype=value_dtype).reshape(1, -1)
        total = node("Add", [total, const("baseline", baseline)], "raw")
    elif kind in _FOREST:  # summed, then divided, as scikit-learn averages (ties stay ties)
        total = node("Div", [total, const("n_trees_f", np.asarray([len(nodes.roots)], value_dtype))], "mean")
    outputs: list[Any] = []
    if kind in _IFOREST:  # score = 2 ** -mean path share; decision = score > calibrated threshold
        score = node(
            "Pow", [const("two", np.asarray([2.0], value_dtype)), node("Neg", [total], "neg")], "pow"
        )
        above = node("Greater", [score, const("cut", np.asarray([estimator.threshold_], value_dtype))], "gt")
        flat = node("Reshape", [above, const("flat_shape", [-1])], "flat")
        made.append(
            helper.make_node("Cast", [flat], ["trees_output"], name="trees_out", to=TensorProto.INT64)
        )
        made.append(helper.make_node("Cast", [score], ["trees_score"], name="trees_sc", to=TensorProto.FLOAT))
        outputs = [
            helper.make_tensor_value_info("trees_output", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("trees_score", TensorProto.FLOAT, [None, 1]),
        ]
    elif kind.endswith("Classifier"):
        if hgb and nodes.value.shape[1] == 1:  # binary: one logit
            p = node("Sigmoid", [total], "p")
            proba = node(
                "Concat",
                [node("Sub", [const("one_f", np.ones((1, 1), value_dtype)), p], "q"), p],
                "pp",
                axis=1,
            )
        elif hgb:
            proba = node("Softmax", [total], "pp", axis=1)
        else:
            proba = total
        made.append(
            helper.make_node("Cast", [proba], ["probabilities"], name="trees_proba", to=TensorProto.FLOAT)
        )
        index = node("ArgMax", [proba], "argmax", axis=1, keepdims=0)
        classes = np.asarray(estimator.classes_)
        strings = classes.dtype.kind in "OUS"
        table = np.array(classes.astype(str), dtype=object) if strings else classes.astype(np.int64)
        made.append(
            helper.make_node(
                "Gather", [const("classes", table), index], ["label"], name="trees_label", axis=0
            )
        )
        outputs = [
            helper.make_tensor_value_info(
                "label", TensorProto.STRING if strings else TensorProto.INT64, [None]
            ),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, len(classes)]),
        ]
    else:
        made.append(
            helper.make_node("Cast", [total], ["trees_output"], name="trees_out", to=TensorProto.FLOAT)
        )
        outputs = [helper.make_tensor_value_info("trees_output", TensorProto.FLOAT, [None, 1])]
    graph.node.extend(made)
    graph.initializer.extend(consts)
    del graph.output[:]
    graph.output.extend(outputs)
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = max(imp.version, opset)
    return model
