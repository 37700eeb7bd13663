"""A PyTorch MLP behind the scikit-learn estimator interface.

Weights live in plain numpy arrays after ``fit``, so the estimator pickles nothing of
torch: MLflow's skops serialisation stores it as a trusted type, and the export stage
rebuilds the same ``torch.nn`` module from the arrays for ``torch.onnx.export``.
``partial_fit`` makes one pass of mini-batches over the rows it is given: over the whole
training split, that is one epoch (a Ray Tune trial reports after each, and ASHA can stop weak
trials early); over a stream's batches in turn, it trains on data that never sits in memory
whole (the classifier then needs every class up front, as scikit-learn's ``classes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

__all__ = ["MLPClassifierTorch", "MLPRegressorTorch", "build_module"]


def build_module(n_in: int, hidden_units: int, layers: int, n_out: int, dropout: float) -> Any:
    import torch

    blocks: list[torch.nn.Module] = []
    width = n_in
    for _ in range(layers):
        blocks += [torch.nn.Linear(width, hidden_units), torch.nn.ReLU(), torch.nn.Dropout(dropout)]
        width = hidden_units
    blocks.append(torch.nn.Linear(width, n_out))
    return torch.nn.Sequential(*blocks)


class _TorchMLP(BaseEstimator):  # type: ignore[misc]
    _classifier = False

    def __init__(
        self,
        hidden_units: int = 64,
        layers: int = 2,
        learning_rate: float = 1e-3,
        epochs: int = 30,
        dropout: float = 0.0,
        batch_size: int = 256,
        weight_decay: float = 0.0,
        random_state: int = 0,
    ) -> None:
        self.hidden_units = hidden_units
        self.layers = layers
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.dropout = dropout
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.random_state = random_state

    # -- state as numpy ------------------------------------------------------------------

    def _module(self) -> Any:
        import torch

        module = build_module(
            self.n_features_in_,
            int(self.hidden_units),
            int(self.layers),
            self.n_outputs_,
            float(self.dropout),
        )
        if hasattr(self, "weights_"):
            state = {
                k: torch.from_numpy(np.asarray(v))
                for k, v in zip(self.state_keys_, self.weights_, strict=True)
            }
            module.load_state_dict(state)
        return module

    def _store(self, module: Any) -> None:
        state = module.state_dict()
        self.state_keys_ = list(state)
        self.weights_ = [v.detach().cpu().numpy().copy() for v in state.values()]

    # -- training ------------------------------------------------------------------------

    def _targets(self, y: Any) -> np.ndarray:
        return np.asarray(y, dtype=np.float32).reshape(-1, 1)

    def _loss(self) -> Any:
        import torch

        return torch.nn.MSELoss()

    def _start(self, X: Any, y: Any, classes: Any = None) -> None:
        import torch

        torch.manual_seed(int(self.random_state))
        self.n_features_in_ = np.asarray(X).shape[1]
        self.n_outputs_ = 1
        self._module_ = self._module()
        self._optim_ = torch.optim.AdamW(
            self._module_.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
        )
        self._rng_ = np.random.default_rng(int(self.random_state))
        self.epochs_done_ = 0

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> _TorchMLP:
        """One pass of shuffled mini-batches over these rows (``classes``: every label, for a stream)."""
        import torch

        if not hasattr(self, "_module_"):
            self._start(X, y, classes)
        features = torch.from_numpy(np.asarray(X, dtype=np.float32))
        targets = torch.from_numpy(self._targets(y))
        module, optim, loss_fn = self._module_, self._optim_, self._loss()
        module.train()
        order = self._rng_.permutation(len(features))
        for start in range(0, len(order), int(self.batch_size)):
            idx = torch.from_numpy(order[start : start + int(self.batch_size)])
            optim.zero_grad()
            loss = loss_fn(module(features[idx]), targets[idx])
            loss.backward()
            optim.step()
        self.epochs_done_ += 1
        self._store(module)
        return self

    def fit(self, X: Any, y: Any) -> _TorchMLP:
        for attr in ("_module_", "weights_"):
            if hasattr(self, attr):
                delattr(self, attr)
        for _ in range(int(self.epochs)):
            self.partial_fit(X, y)
        self._drop_training_state()
        return self

    def _drop_training_state(self) -> None:
        for attr in ("_module_", "_optim_", "_rng_"):
            if hasattr(self, attr):
                delattr(self, attr)

    def _raw(self, X: Any) -> np.ndarray:
        import torch

        module = self._module()
        module.eval()
        with torch.no_grad():
            out = module(torch.from_numpy(np.asarray(X, dtype=np.float32))).numpy()
        return np.asarray(out, dtype=np.float64)


class MLPRegressorTorch(_TorchMLP, RegressorMixin):  # type: ignore[misc]
    def predict(self, X: Any) -> np.ndarray:
        return self._raw(X).ravel()


class MLPClassifierTorch(_TorchMLP, ClassifierMixin):  # type: ignore[misc]
    def _start(self, X: Any, y: Any, classes: Any = None) -> None:
        self.classes_ = np.unique(np.asarray(y if classes is None else classes))
        super()._start(X, y)
        self.n_outputs_ = len(self.classes_)
        self._module_ = self._module()
        import torch

        self._optim_ = torch.optim.AdamW(
            self._module_.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
        )

    def _targets(self, y: Any) -> np.ndarray:
        return np.searchsorted(self.classes_, np.asarray(y)).astype(np.int64)

    def _loss(self) -> Any:
        import torch

        return torch.nn.CrossEntropyLoss()

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = self._raw(X)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(X).argmax(axis=1)])
