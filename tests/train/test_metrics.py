"""Metrics on holdout windows that happen to miss a class."""

from __future__ import annotations

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from edgeml.train.metrics import evaluate


def test_a_class_missing_from_the_holdout_does_not_count_as_zero_f1() -> None:
    X_train = np.zeros((6, 1))
    model = Pipeline([("model", DummyClassifier(strategy="constant", constant="ok"))])
    model.fit(X_train, ["ok", "ok", "ok", "leak", "heat", "heat"])
    y = np.array(["ok", "ok", "ok"])  # no leak, no heat in this window; all predicted right
    scores = evaluate("classification", model, np.zeros((3, 1)), y)
    assert scores["f1_macro"] == 1.0
    assert scores["accuracy"] == 1.0


def test_roc_auc_when_a_split_holds_two_of_several_classes() -> None:
    """A validation window with only 'ok' and one fault: a binary AUC, not a crash (found by the demo)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    labels = np.array(["ok", "leak", "heat"])[np.digitize(X[:, 0], [-0.5, 0.5])]
    model = Pipeline([("model", LogisticRegression())]).fit(X, labels)
    window = X[:, 0] < 0.5  # no "heat" rows in this window
    scores = evaluate("classification", model, X[window], labels[window])
    assert 0.9 < scores["roc_auc"] <= 1.0
