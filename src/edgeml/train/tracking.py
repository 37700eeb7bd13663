"""MLflow: experiment and runs, the registered model, its tags and aliases.

Default tracking is a SQLite file under the appliance home with artifacts next to it;
``--tracking-uri`` points at an MLflow server instead. Models are saved with skops:
the types they may contain are declared, never trusted blindly.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeml.errors import UserError
from edgeml.settings import Settings

__all__ = [
    "TRUSTED_MODULES",
    "champion",
    "experiment_id",
    "git_commit",
    "import_skops",
    "pip_requirements",
    "tracking_uri",
    "trusted_types",
]

#: modules whose types a saved model may contain (skops refuses anything else)
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "edgeml.train.", "builtins.", "collections.")


def tracking_uri(settings: Settings, override: str | None = None) -> str:
    # edgeml shows its own progress; MLflow's per-download bars would interleave with it.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return override or f"sqlite:///{(settings.home / 'mlflow.db').resolve()}"


def experiment_id(name: str, settings: Settings) -> str:
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    artifacts = (settings.home / "mlartifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(name, artifact_location=artifacts.as_uri()))


def import_skops() -> Any:
    """``skops.io``, imported without torch when nothing has loaded torch yet.

    skops lists scikit-learn's estimators on import by walking every package under sklearn, and
    the walk imports array_api_compat's torch shim, which imports torch when it is installed:
    ~180 MB and seconds in every process that saves or loads a forest. The shim holds no
    estimator: with torch not found for the walk (as where it is not installed) the walk skips it
    and skops trusts the same types. A model that needs torch (an MLP) imports it itself, later.
    """
    import importlib
    import sys

    if "skops.io" in sys.modules or "torch" in sys.modules:
        return importlib.import_module("skops.io")
    sys.meta_path.insert(0, _NoTorch)
    try:
        return importlib.import_module("skops.io")
    finally:
        sys.meta_path.remove(_NoTorch)


class _NoTorch:
    """A finder that says torch is not installed (for :func:`import_skops`)."""

    @staticmethod
    def find_spec(name: str, *_: Any) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def trusted_types(model: Any) -> list[str]:
    """The types skops finds in ``model``, after checking each comes from a trusted module."""
    sio = import_skops()
    found = sio.get_untrusted_types(data=sio.dumps(model))
    refused = [t for t in found if not t.startswith(TRUSTED_MODULES)]
    if refused:
        raise UserError(
            f"the model holds types edgeml does not trust for serialisation: {', '.join(refused)}"
        )
    return list(found)


def pip_requirements(types: list[str]) -> list[str]:
    """What loading a saved model needs, pinned to what trained it: edgeml, scikit-learn, skops (the
    format), pandas (the input), the libraries ``types`` (from :func:`trusted_types`) come from, torch
    for an MLP.

    Declared rather than left to MLflow, which infers them by loading the model in a subprocess:
    10-40 s per training on a 2-core machine, and it listed whatever the trainer had imported (pytest, tqdm).
    """
    from importlib.metadata import version

    owners = _module_owners()
    names = {"edgeml", "scikit-learn", "skops", "pandas", "numpy"} | {
        d for t in types for d in owners.get(t.split(".")[0], [])
    }
    if any(t.startswith("edgeml.train.mlp.") for t in types):
        names.add("torch")
    # a local version label (torch's +cpu) is not installable from an index
    return sorted(f"{name}=={version(name).split('+')[0]}" for name in names)


@functools.cache
def _module_owners() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions that install it. Reading every installed distribution's
    file list takes 1-3 s here, and what is installed does not change while a process trains."""
    from importlib.metadata import packages_distributions

    return packages_distributions()


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as a user would run it
            capture_output=True,
            text=True,
            timeout=5,
            cwd=cwd,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def champion(name: str) -> tuple[str, Any] | None:
    """(version, loaded model) of the registered model's ``champion`` alias, if any."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        return None
    import_skops()
    return str(version.version), mlflow.sklearn.load_model(f"models:/{name}@champion")
