"""``edgeml export``: a registered model to ONNX (and OpenVINO IR) for one firmware profile.

The export is converted, run on the profile's runtime, and compared with the native
model on the holdout rows kept with the model version; an export that fails parity is
not written. The report (sizes, parity, single-row and batch latency on this host) goes
next to the model file, for the bundle to carry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from edgeml.errors import UserError
from edgeml.profiles import FirmwareProfile, get_profile, load_profiles
from edgeml.settings import Settings
from edgeml.spec.models import FAMILIES, Spec
from edgeml.support import family_refusal, input_refusal
from edgeml.train.pipeline import InputLayout, input_layout
from edgeml.train.tracking import import_skops

__all__ = [
    "ExportReport",
    "ModelVersion",
    "default_export_dir",
    "export_model",
    "load_kept_artifacts",
    "resolve_model_version",
]

#: families OpenVINO runs (edgeml.support says why the others cannot)
OPENVINO_FAMILIES = tuple(
    sorted({f for fams in FAMILIES.values() for f in fams if family_refusal("openvino", f) is None})
)
#: OpenVINO's CPU plugin defaults to bf16 on CPUs that have it (AMX, AVX512-BF16), which moves
#: MLP probabilities by up to 0.5; exports are proven in f32 and the agent must compile them so
OPENVINO_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class ExportReport:
    model: str
    version: str
    family: str
    profile: str
    runtime: str
    precision: str  # what the exported model computes in (see notes when it differs from the profile's)
    profile_precision: str
    opset: int
    files: list[dict[str, Any]]
    size_bytes: int
    parity: dict[str, float]
    latency: dict[str, float]
    verified_on_device_class: bool
    runtime_options: dict[str, str]
    quantization: dict[str, Any] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


class ModelVersion(NamedTuple):
    """A registered model version, loaded: what export and bundling read from the registry."""

    name: str
    version: str
    run_id: str
    family: str
    snapshot: str
    model: Any


def resolve_model_version(model_uri: str, tracking: str) -> ModelVersion:
    """(name, version, run id, family, snapshot, model) of ``models:/name@alias`` or ``models:/name/N``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from edgeml.train.mlflow_db import seed_sqlite_store

    seed_sqlite_store(tracking)
    mlflow.set_tracking_uri(tracking)
    client = mlflow.MlflowClient()
    if not model_uri.startswith("models:/"):
        raise UserError(f"model URI {model_uri!r} must look like models:/NAME@ALIAS or models:/NAME/VERSION")
    ref = model_uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = ref.partition("/")
            version = client.get_model_version(name, number)
        import_skops()
        model = mlflow.sklearn.load_model(model_uri)
    except MlflowException as exc:
        raise UserError(f"cannot load {model_uri}: {exc.message}", hint="`edgeml models list NAME`") from exc
    tags = version.tags
    return ModelVersion(
        name,
        str(version.version),
        str(version.run_id),
        tags.get("family", "unknown"),
        tags.get("snapshot", ""),
        model,
    )


def load_kept_artifacts(
    run_id: str, dest: Path, settings: Settings | None = None
) -> tuple[Spec, pd.DataFrame]:
    """The spec and holdout rows training kept with ``run_id``; rows sealed under hipaa are opened
    with the key ``settings``' appliance seals them with (:mod:`edgeml.privacy.sealed_rows`)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from edgeml.privacy.sealed_rows import is_sealed, kept_rows_key, read_rows
    from edgeml.train.run import KEPT_ROWS

    try:
        folder = Path(mlflow.MlflowClient().download_artifacts(run_id, "edgeml", str(dest)))
    except (MlflowException, OSError) as exc:
        raise UserError(
            "this model version carries no holdout rows to prove parity with",
            hint="retrain it with this edgeml version",
        ) from exc
    spec = Spec.model_validate_json((folder / "spec.json").read_text())
    path = folder / "holdout.parquet"
    key = kept_rows_key(settings) if settings is not None and is_sealed(path) else None
    return spec, read_rows(path, run_id=run_id, artifact=KEPT_ROWS, key=key)


def _initial_types(layout: InputLayout) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    # Double: preprocessing then matches scikit-learn's (and float inputs would bring in ONNX-ML
    # Scaler/Imputer operators, which OpenVINO lacks and ONNX Runtime runs in float only).
    numeric = DoubleTensorType

    types: list[tuple[str, Any]] = []
    for name in layout.columns:
        if name in layout.time:
            types.append((name, DoubleTensorType([None, 1])))  # epoch seconds need double
        elif name in layout.numeric:
            types.append((name, numeric([None, 1])))
        else:
            types.append((name, StringTensorType([None, 1])))
    return types


def feeds(frame: pd.DataFrame, layout: InputLayout) -> dict[str, np.ndarray]:
    """ONNX inputs for rows of raw values: one [N, 1] tensor per input column."""
    out = {}
    for name in layout.columns:
        if name in layout.time or name in layout.numeric:
            out[name] = frame[[name]].to_numpy(dtype=np.float64)
        else:
            out[name] = frame[[name]].fillna("").astype(str).to_numpy(dtype=object)
    return out


def _text_options(model: Any) -> dict[int, dict[str, Any]]:
    """The TF-IDF vectorizers' tokenisation, host-independent: the C locale and the training pattern."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from edgeml.train.pipeline import TOKEN_PATTERN

    options: dict[int, dict[str, Any]] = {}
    for _, step, _ in getattr(model[0], "transformers_", []):
        if isinstance(step, TfidfVectorizer):
            if step.token_pattern != TOKEN_PATTERN:
                raise UserError(
                    f"this text model tokenises with {step.token_pattern!r}, which the device's graph "
                    "cannot reproduce on every host",
                    hint="retrain it with this edgeml version",
                )
            # StringNormalizer's default locale (en_US.UTF-8) is missing on many hosts, this one too.
            options[id(step)] = {"tokenexp": TOKEN_PATTERN, "locale": "C"}
    return options


def output_names(task: str, target: str | None) -> list[str]:
    """The exported model's outputs, primary first: classifiers keep ``label`` and ``probabilities``
    (what telemetry reads); a regressor's value and an anomaly decision are named after the target."""
    if task in ("classification", "text-classification"):
        return ["label", "probabilities"]
    if task == "regression":
        return [target or "prediction"]
    if task == "anomaly":
        return [target or "anomaly", "anomaly_score"]
    return ["cluster", "distances"]


def _rename_outputs(model: Any, names: list[str]) -> Any:
    graph = model.graph
    old = [o.name for o in graph.output]
    if len(old) != len(names):
        raise AssertionError(f"expected outputs {names}, the graph gives {old}")
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.input}
    mapping = {}
    for before, wanted in zip(old, names, strict=True):
        clash = before != wanted and wanted in taken - set(old)
        mapping[before] = f"{wanted}_out" if clash else wanted  # an inner tensor may have the name
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for out in graph.output:
        out.name = mapping[out.name]
    return model


def _convert(model: Any, layout: InputLayout, profile: FirmwareProfile, family: str, names: list[str]) -> Any:
    from skl2onnx import convert_sklearn

    from edgeml.export.converters import register
    from edgeml.export.trees import append_trees, is_tree_ensemble

    register()
    options: dict[int, dict[str, Any]] = _text_options(model)
    if hasattr(model[-1], "predict_proba"):
        options[id(model[-1])] = {"zipmap": False}
    opsets = {"": profile.opset, "ai.onnx.ml": 3}
    # Tree ensembles become standard tensor operations (trees.py), not ONNX-ML TreeEnsemble: skl2onnx
    # 1.20 cannot convert scikit-learn 1.9's HistGradientBoosting, ONNX Runtime's TreeEnsembleRegressor
    # answers float where skl2onnx declares double, its classifier breaks scikit-learn's ties between
    # equal votes differently, and skl2onnx's isolation forest fails on double inputs.
    try:
        if is_tree_ensemble(model[-1]):
            features = convert_sklearn(
                model[:-1], initial_types=_initial_types(layout), options=options or None, target_opset=opsets
            )
            converted = append_trees(
                features,
                features.graph.output[0].name,
                model[-1],
                profile.runtime == "openvino",
                profile.opset,
            )
        else:
            converted = convert_sklearn(
                model, initial_types=_initial_types(layout), options=options or None, target_opset=opsets
            )
    except UserError:
        raise
    except Exception as exc:  # skl2onnx raises many kinds; the user needs the family and the cause
        raise UserError(
            f"the {family} model cannot be converted to ONNX: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}",
            hint="see docs/support-matrix.md for the families each profile runs",
        ) from exc
    return _rename_outputs(converted, names)


class _Runner:
    """Runs an exported model on the profile's runtime; returns its outputs as numpy."""

    def __init__(self, path: Path, profile: FirmwareProfile, notes: list[str]) -> None:
        self.profile = profile
        if profile.runtime == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = profile.threads
            opts.inter_op_num_threads = 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared CPUs
            provider = profile.execution_provider
            if provider not in ort.get_available_providers():
                notes.append(
                    f"{provider} is not available on this host: parity and latency measured "
                    "with CPUExecutionProvider"
                )
                provider = "CPUExecutionProvider"
            self.session = ort.InferenceSession(str(path), opts, providers=[provider])
        else:
            import openvino as ov

            core = ov.Core()
            self.compiled = core.compile_model(
                core.read_model(str(path)),
                profile.execution_provider,
                {"INFERENCE_NUM_THREADS": profile.threads, **OPENVINO_CONFIG},
            )

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (the runtimes do not agree on their order)."""
        if self.profile.runtime == "onnxruntime":
            names = [o.name for o in self.session.get_outputs()]
            return dict(zip(names, (np.asarray(o) for o in self.session.run(None, inputs)), strict=True))
        result = self.compiled(inputs)
        return {out.get_any_name(): np.asarray(result[out]) for out in self.compiled.outputs}


def _parity(model: Any, outputs: dict[str, np.ndarray], X: pd.DataFrame) -> dict[str, float]:
    """How far the export's outputs are from the native model's, on the same rows.

    Classifiers: probabilities and labels. Anomaly: the score (``score_samples``) and the decision
    (``predict``). Clustering: the distances to each centre (``transform``) and the cluster.
    Regression: the value, relative to the largest magnitude (at least 1).
    """
    est, primary = model[-1], next(iter(outputs.values()))
    rows = float(len(X))
    if hasattr(est, "predict_proba"):
        native = model.predict_proba(X)
        labels = outputs["label"].ravel()
        return {
            "rows": rows,
            "max_abs_diff": float(np.abs(outputs["probabilities"] - native).max()),
            "label_agreement": float(np.mean(labels.astype(str) == model.predict(X).astype(str))),
        }
    if hasattr(est, "threshold_") or hasattr(est, "cluster_centers_"):
        second = list(outputs.values())[1]
        if hasattr(est, "threshold_"):
            native_values = est.score_samples(model[:-1].transform(X)).reshape(-1, 1)
        else:
            native_values = model.transform(X)
        scale = max(1.0, float(np.abs(native_values).max()))
        return {
            "rows": rows,
            "max_abs_diff": float(np.abs(second - native_values).max() / scale),
            "label_agreement": float(np.mean(primary.ravel() == np.asarray(model.predict(X)).ravel())),
        }
    values = primary.ravel()
    native = np.asarray(model.predict(X), dtype=np.float64)
    scale = max(1.0, float(np.abs(native).max()))
    return {
        "rows": rows,
        "max_abs_diff": float(np.abs(values - native).max() / scale),
        "label_agreement": 1.0,
    }


def _latency(run: _Runner, X: pd.DataFrame, layout: InputLayout) -> dict[str, float]:
    one = feeds(X.head(1), layout)
    for _ in range(20):
        run(one)  # warm-up
    times = []
    for _ in range(300):
        start = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - start)
    batch = feeds(pd.concat([X] * (256 // len(X) + 1), ignore_index=True).head(256), layout)
    start = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        run(batch)
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": float(np.percentile(times, 50) * 1000),
        "p99_ms": float(np.percentile(times, 99) * 1000),
        "batch256_rows_per_s": float(256 * rounds / elapsed),
    }


def _file(path: Path) -> dict[str, Any]:
    return {
        "path": path.name,
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def default_export_dir(settings: Settings, model_uri: str, profile: str) -> Path:
    """Where an export goes unless told otherwise: $EDGEML_HOME/exports/NAME/VERSION-OR-ALIAS/PROFILE."""
    ref = model_uri.removeprefix("models:/").replace("@", "/")
    return settings.home / "exports" / ref / profile


def _refuse_family(profile: FirmwareProfile, family: str, home: Path) -> None:
    why = family_refusal(profile.runtime, family)
    if why is not None:
        able = [p.name for p in load_profiles(home).values() if family_refusal(p.runtime, family) is None]
        raise UserError(
            f"{profile.name} ({profile.runtime}) cannot run {family} models: {why}",
            hint=f"export it for a profile that runs {family}: {', '.join(able)}",
        )


def _refuse_inputs(profile: FirmwareProfile, layout: InputLayout) -> None:
    kinds = {
        "categorical": bool(layout.categorical),
        "text": bool(layout.text),
        "timestamp": bool(layout.time),
    }
    for kind, present in kinds.items():
        why = input_refusal(profile.runtime, kind) if present else None
        if why is not None:
            raise UserError(
                f"this model has {kind} inputs, which {profile.name} cannot take: {why}",
                hint="export it for an ONNX Runtime profile (see docs/support-matrix.md)",
            )


def _calibration(
    spec: Spec,
    settings: Settings,
    snapshot: str,
    layout: InputLayout,
    holdout: pd.DataFrame,
    notes: list[str],
) -> tuple[list[dict[str, np.ndarray]], str]:
    """Single-row input feeds for int8 calibration: training rows of the model's snapshot if still there."""
    from edgeml.train.data import load_training_data

    try:
        rows = load_training_data(spec, settings, snapshot or None).X_train[layout.columns]
        source = f"training snapshot {snapshot}"
    except (UserError, OSError) as exc:
        rows, source = holdout[layout.columns], "holdout rows kept with the model version"
        notes.append(f"int8 calibrated on the holdout rows: the training snapshot is not readable ({exc})")
    rows = rows.sample(n=min(CALIBRATION_ROWS, len(rows)), random_state=0)
    return [feeds(rows.iloc[[i]], layout) for i in range(len(rows))], source


#: rows the int8 calibration reads
CALIBRATION_ROWS = 300


def _build(
    onnx_model: Any,
    precision: str,
    profile: FirmwareProfile,
    stage: Path,
    work: Path,
    calibrate: Any,
) -> Path:
    """Write the model file the device runs at ``precision``; return its path."""
    from edgeml.export.quantize import to_fp16, to_int8_onnx, to_int8_openvino

    if profile.runtime == "onnxruntime":
        path = stage / "model.onnx"
        if precision == "int8":
            fp32 = work / "fp32.onnx"
            fp32.write_bytes(onnx_model.SerializeToString())
            to_int8_onnx(fp32, path, calibrate())
        else:
            model = to_fp16(onnx_model) if precision == "fp16" else onnx_model
            path.write_bytes(model.SerializeToString())
        return path
    import openvino as ov

    source = work / "fp32.onnx"
    source.write_bytes(onnx_model.SerializeToString())
    ov_model = ov.convert_model(str(source))
    if precision == "int8":
        ov_model = to_int8_openvino(ov_model, calibrate())
    # save_model halves weights to fp16 by default, which alone moves MLP probabilities by ~1e-2.
    ov.save_model(ov_model, str(stage / "model.xml"), compress_to_fp16=False)
    return stage / "model.xml"


def export_model(
    model_uri: str,
    profile_name: str,
    out: Path,
    settings: Settings,
    tracking: str | None = None,
    quantization_tolerance: float | None = None,
    *,
    resolved: ModelVersion | None = None,
) -> ExportReport:
    """Export, prove parity (and the accuracy gate for fp16/int8), measure; write ``out/`` only when
    every check passed. ``quantization_tolerance`` overrides the spec's ``gates.quantization_tolerance``;
    ``resolved``: ``model_uri`` already loaded by the caller (loading a forest takes seconds)."""
    from edgeml.export.quantize import QUANTIZABLE_FAMILIES, MetricGate
    from edgeml.train.run import TARGET_COLUMN
    from edgeml.train.tracking import tracking_uri

    profile = get_profile(profile_name, settings.home)
    name, version, run_id, family, snapshot, model = resolved or resolve_model_version(
        model_uri, tracking_uri(settings, tracking)
    )
    _refuse_family(profile, family, settings.home)
    notes: list[str] = []
    precision = profile.precision
    if precision != "fp32" and family not in QUANTIZABLE_FAMILIES:
        notes.append(
            f"{precision} applies to neural-network layers; the {family} model has none (its operators "
            f"have no {precision} kernels), so it is exported in fp32"
        )
        precision = "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec, holdout = load_kept_artifacts(run_id, work / "artifacts", settings)
        layout = input_layout(spec)
        _refuse_inputs(profile, layout)
        X = holdout[layout.columns]
        onnx_model = _convert(model, layout, profile, family, output_names(spec.task, spec.target))
        stage = work / "export"
        stage.mkdir()
        calibration: dict[str, Any] = {}

        def calibrate() -> list[dict[str, np.ndarray]]:
            rows, calibration["source"] = _calibration(spec, settings, snapshot, layout, holdout, notes)
            calibration["rows"] = len(rows)
            return rows

        model_path = _build(onnx_model, precision, profile, stage, work, calibrate)
        run = _Runner(model_path, profile, notes)
        outputs = run(feeds(X, layout))
        quantization = None
        if precision != "fp32":
            if TARGET_COLUMN not in holdout:
                raise UserError(
                    f"a {precision} export needs holdout targets for its accuracy gate; this {spec.task} "
                    "model has none",
                    hint="export it for an fp32 profile",
                )
            tolerance = (
                spec.gates.quantization_tolerance
                if quantization_tolerance is None
                else quantization_tolerance
            )
            gate = MetricGate(spec, tolerance)
            what = f"{precision} export of {name} v{version}"
            quantization = {
                **gate.check(model, outputs, X, holdout[TARGET_COLUMN].to_numpy(), what),
                **calibration,
            }
        parity = _parity(model, outputs, X)
        tol = profile.tolerance
        if parity["max_abs_diff"] > tol.max_abs_diff or parity["label_agreement"] < tol.label_agreement:
            raise UserError(
                f"the {profile.runtime} {precision} export of {name} v{version} does not match the model: "
                f"max abs diff {parity['max_abs_diff']:.2e} (allowed {tol.max_abs_diff:.0e}), labels agree "
                f"on {parity['label_agreement']:.4%} (need {tol.label_agreement:.1%}); nothing was written"
            )
        files = [_file(p) for p in sorted(stage.iterdir())]
        size = sum(f["bytes"] for f in files)
        if size > profile.max_bundle_size:
            raise UserError(
                f"the export is {size:,} bytes; profile {profile.name} takes at most "
                f"{int(profile.max_bundle_size):,}",
                hint="choose a smaller model (fewer trees, "
                "smaller MLP) or a profile with a larger max_bundle_size",
            )
        if profile.runtime == "openvino":
            notes.append(
                "compile with INFERENCE_PRECISION_HINT=f32 (runtime_options): the CPU plugin's bf16 "
                "default does not match the model"
            )
            options = dict(OPENVINO_CONFIG)
        else:
            options = {"session.intra_op.allow_spinning": "0"}
        report = ExportReport(
            model=name,
            version=version,
            family=family,
            profile=profile.name,
            runtime=profile.runtime,
            precision=precision,
            profile_precision=profile.precision,
            opset=profile.opset,
            files=files,
            size_bytes=size,
            parity=parity,
            latency=_latency(run, X, layout),
            verified_on_device_class=profile.verified,
            runtime_options=options,
            quantization=quantization,
            notes=notes,
        )
        (stage / "export_report.json").write_text(report.to_json())
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(stage, out)
    return report
