"""``edgeml bundle build``: a registered model version, exported for a profile, signed and published.

The export is redone (it proves parity again and writes the report the bundle carries).
Input histograms describe the training snapshot (the conditions the model was built for; a
time-split holdout alone would be one stretch of time, and normal operation elsewhere in
time would read as drift); score histograms, predicted labels, the calibration map and the
golden samples come from the holdout rows kept with the version — NannyML's reference
period: data the model did not train on, with known targets and outputs. Where row samples are
allowed (compliance ``none``), the holdout split of the version's snapshot (up to 50,000 rows; the
group's own rows for a version trained for a group) with the staged model's outputs is published
too, for the central node's NannyML (:mod:`edgeml.bundle.reference_rows`). Blobs go to the store under
their sha256, so a blob another version already uploaded is not uploaded again.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgeml.agent.runtime import ModelRuntime
from edgeml.audit import AuditLog, cli_actor
from edgeml.bundle.groups import GroupRows, rows_for_groups
from edgeml.bundle.keys import Signer, canonical_json
from edgeml.bundle.manifest import (
    Calibration,
    FileEntry,
    Golden,
    GroupReference,
    InputField,
    Manifest,
    Outputs,
    Reference,
    Windows,
    blob_key,
    manifest_key,
)
from edgeml.bundle.pii import pii_inputs, synthesise_golden
from edgeml.bundle.reference import PROBABILITY_EDGES, numeric_histogram
from edgeml.bundle.reference_rows import publish_reference_rows, reference_frame, sample_reference_rows
from edgeml.bundle.trail import audit_build
from edgeml.drift.reference import group_reference, model_inputs_reference
from edgeml.errors import EdgemlError, UserError
from edgeml.export.run import (
    ExportReport,
    ModelVersion,
    default_export_dir,
    export_model,
    load_kept_artifacts,
    resolve_model_version,
)
from edgeml.profiles import FirmwareProfile, get_profile
from edgeml.settings import Settings
from edgeml.spec.models import Spec
from edgeml.store.base import ObjectStore
from edgeml.train.pipeline import InputLayout, input_layout
from edgeml.train.run import TARGET_COLUMN

__all__ = ["EXPIRES_DAYS", "GOLDEN_ROWS", "WEIGHTS_FILE", "BuildResult", "build_bundle", "publish_bundle"]

EXPIRES_DAYS = 180
GOLDEN_ROWS = 8
WEIGHTS_FILE = "model.onnx.data"
_CALIBRATION_GRID = [round(0.05 * i, 2) for i in range(21)]


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    key: str
    uploaded_bytes: int
    reused_bytes: int


def _input_fields(spec: Spec, layout: InputLayout, dtypes: dict[str, str]) -> list[InputField]:
    columns = spec.schema_.columns
    pii = pii_inputs(spec, layout.columns)
    kinds = dict.fromkeys(layout.numeric, "numeric") | dict.fromkeys(layout.categorical, "categorical")
    kinds |= dict.fromkeys(layout.text, "text") | dict.fromkeys(layout.time, "time")
    fields = []
    for name in layout.columns:
        col = columns.get(name)
        fields.append(
            InputField(
                name=name,
                kind=kinds[name],
                dtype=dtypes[name],
                nullable=col.nullable if col else True,
                min=col.min if col else None,
                max=col.max if col else None,
                values=col.values if col else None,
                unit=col.unit if col else None,
                pii=name in pii,
            )
        )
    return fields


def _graph_dtypes(folder: Path, runtime: str) -> dict[str, str]:
    """Element type of each model input, as the graph declares it."""
    names = {"tensor(double)": "float64", "tensor(float)": "float32", "tensor(string)": "string"}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return {i.name: names[i.type] for i in session.get_inputs()}
    import openvino as ov

    model = ov.Core().read_model(str(folder / "model.xml"))
    ov_names = {"f64": "float64", "f32": "float32", "string": "string"}
    return {i.get_any_name(): ov_names[i.get_element_type().get_type_name()] for i in model.inputs}


#: training rows the input histograms are drawn from, at most
REFERENCE_ROWS = 200_000


@dataclass(frozen=True)
class _SnapshotRows:
    inputs: pd.DataFrame  # of every split, a sample of REFERENCE_ROWS at most
    holdout: pd.DataFrame  # the holdout split's inputs and TARGET_COLUMN: NannyML's reference is from it


def _snapshot_rows(
    spec: Spec, settings: Settings, snapshot: str, layout: InputLayout
) -> _SnapshotRows | None:
    """Rows of the snapshot a version trained on, split as training split them; None if it is gone."""
    from edgeml.train.data import load_training_data

    try:
        data = load_training_data(spec, settings, snapshot)
    except EdgemlError:
        return None
    rows = pd.concat([data.X_train, data.X_val, data.X_hold], ignore_index=True)[layout.columns]
    holdout = data.X_hold[layout.columns].reset_index(drop=True)
    if data.y_hold is not None:
        holdout[TARGET_COLUMN] = data.y_hold
    inputs = rows.sample(REFERENCE_ROWS, random_state=0) if len(rows) > REFERENCE_ROWS else rows
    return _SnapshotRows(inputs, holdout)


def _nannyml_rows(
    kept: pd.DataFrame, snapshot: _SnapshotRows | None, trained_for: GroupRows | None, layout: InputLayout
) -> pd.DataFrame:
    """The rows NannyML's reference is drawn from: the snapshot's holdout split (only the version's
    groups' rows where it was trained for groups and the holdout holds some), or the rows kept with
    the run when the snapshot is gone; at most MAX_REFERENCE_ROWS of them."""
    rows = kept if snapshot is None else snapshot.holdout
    if trained_for is not None:
        own = trained_for.own(rows, layout)
        if not own.empty:
            rows = own
    return sample_reference_rows(rows)


def _reference(
    model: Any,
    spec: Spec,
    layout: InputLayout,
    rows: pd.DataFrame,
    training: pd.DataFrame | None,
    trained_for: GroupRows | None = None,
) -> Reference:
    """Input histograms from the training data (the conditions the model is for); scores, labels
    and calibration from the holdout rows, which the model did not see (as on a device). Trained
    for groups: see :mod:`edgeml.bundle.groups`."""
    X = rows[layout.columns]
    inputs = training if training is not None else X
    pii = pii_inputs(spec, layout.columns)  # no histogram: its edges would be values from the data
    numeric = [n for n in layout.numeric if n not in pii]
    categorical = [n for n in layout.categorical if n not in pii]
    text = [n for n in layout.text if n not in pii]
    features, drift = model_inputs_reference(
        inputs,
        numeric=numeric,
        categorical=categorical,
        text=text,
        allowed={name: spec.schema_.columns[name].values for name in categorical},
    )
    groups: dict[str, GroupReference] = {}
    if trained_for is not None:
        on_version_bins = functools.partial(
            group_reference,
            numeric=numeric,
            categorical=categorical,
            text=text,
            bins=features,
            thresholds=drift,
        )
        landed = f"{len(trained_for.new):,} rows landed since snapshot {trained_for.since}"
        groups = dict.fromkeys(trained_for.groups, on_version_bins(trained_for.new, source=landed))
        if trained_for.old is not None:  # every other group: the rows before, on the same bins
            source = f"{len(trained_for.old):,} rows of snapshot {trained_for.since}"
            rest = on_version_bins(trained_for.old, source=source)
            features, drift, inputs = rest.features, rest.drift, trained_for.old
    scores: dict[str, Any] = {}
    calibration = None
    if hasattr(model[-1], "predict_proba"):
        proba = model.predict_proba(X)
        labels = [str(c) for c in model[-1].classes_]
        for k, label in enumerate(labels):
            scores[f"probability:{label}"] = numeric_histogram(proba[:, k], PROBABILITY_EDGES)
        predicted = [labels[i] for i in proba.argmax(axis=1)]
        if TARGET_COLUMN in rows:
            calibration = _calibration(proba, rows[TARGET_COLUMN].astype(str).to_numpy(), labels)
    else:
        values = np.asarray(model.predict(X))
        if values.dtype.kind in "iub" or spec.task in ("clustering", "anomaly"):
            predicted = [str(v) for v in values]
        else:
            predicted = []
            scores["prediction"] = numeric_histogram(values.astype(np.float64))
    counts: dict[str, int] = {}
    for label in predicted:
        counts[label] = counts.get(label, 0) + 1
    source = "holdout rows kept with the model version"
    if trained_for is not None and trained_for.old is not None:
        groups_named = ", ".join(trained_for.groups)
        source = (
            f"inputs: {len(inputs):,} rows of snapshot {trained_for.since} (groups {groups_named}: "
            f"their own); scores and calibration: {source}"
        )
    elif training is not None:
        source = f"inputs: {len(training):,} rows of the training snapshot; scores and calibration: " + source
    return Reference(
        rows=len(inputs),
        source=source,
        features=features,
        scores=scores,
        predictions=counts,
        calibration=calibration,
        drift=drift,
        groups=groups,
    )


def _calibration(proba: np.ndarray, truth: np.ndarray, labels: list[str]) -> Calibration:
    """Isotonic fit of "is this class" on its predicted probability, tabulated on a grid."""
    from sklearn.isotonic import IsotonicRegression

    values = {}
    for k, label in enumerate(labels):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(proba[:, k], (truth == label).astype(np.float64))
        values[label] = [round(float(v), 6) for v in iso.predict(np.array(_CALIBRATION_GRID))]
    return Calibration(grid=_CALIBRATION_GRID, values=values)


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _golden_rows(
    spec: Spec, rows: pd.DataFrame, training: pd.DataFrame | None, layout: InputLayout
) -> list[dict[str, Any]]:
    """A few rows, one per target class first so the smoke test sees every class it can; pii
    inputs synthesised (:mod:`edgeml.bundle.pii`), never a value from the data. Under gdpr and
    hipaa every row is synthesised (:mod:`edgeml.privacy.example`): a signed manifest cannot be
    rewritten when a subject is erased, so it never holds a subject's row."""
    seen = pd.concat([rows[layout.columns], training], ignore_index=True) if training is not None else rows
    if spec.compliance in ("gdpr", "hipaa"):
        from edgeml.privacy.example import synthesised_rows

        made = synthesised_rows(spec, seen[layout.columns], layout, min(GOLDEN_ROWS, len(rows)) or 1)
        return [{c: _jsonable(v) for c, v in rec.items()} for rec in made]
    picked = rows.groupby(TARGET_COLUMN, sort=True).head(1) if TARGET_COLUMN in rows else rows.head(0)
    picked = pd.concat([picked, rows.drop(picked.index)]).head(GOLDEN_ROWS)
    records = [{c: _jsonable(v) for c, v in rec.items()} for rec in picked[layout.columns].to_dict("records")]
    pii = pii_inputs(spec, layout.columns)
    if not pii:
        return records
    columns = spec.schema_.columns
    bounds = {n: (columns[n].min, columns[n].max) for n in pii if n in columns}
    return synthesise_golden(records, pii, seen, bounds)


def _split_weights(source: Path, folder: Path) -> list[FileEntry]:
    """The model as graph + weights files, so a weights-only change moves only the weights blob.

    Floating-point initializers (the learned parameters) go to the weights file; integer ones
    (the shapes, axes and indices a Reshape or Gather reads) stay in the graph, where ONNX
    Runtime's shape inference needs them when it loads the model.
    """
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import set_external_data, write_external_data_tensors

    weights = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    model = onnx.load(str(source))
    model.graph.name = "edgeml"  # skl2onnx names graphs with a random uuid: the same model must hash the same
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.data_type not in weights:
            continue
        if not tensor.HasField("raw_data"):  # only raw_data moves out; skl2onnx writes double_data, ...
            model.graph.initializer[i].CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
            )
        set_external_data(model.graph.initializer[i], WEIGHTS_FILE)
    write_external_data_tensors(model, str(folder))
    onnx.save_model(model, str(folder / "model.onnx"))
    return [_entry(p) for p in sorted(folder.iterdir())]


def _entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return FileEntry(path=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)


def publish_bundle(
    store: ObjectStore,
    signer: Signer,
    manifest: Manifest,
    folder: Path,
    reference: pd.DataFrame | None = None,
) -> BuildResult:
    """Upload the files ``manifest`` lists from ``folder`` (skipping blobs already stored), the
    ``reference`` rows for NannyML if any (signed apart: see :mod:`edgeml.bundle.reference_rows`),
    then sign the manifest.

    The manifest goes last, so a device never finds a manifest whose blobs are not there yet, nor
    the central node a version whose reference rows are still to come.
    """
    manifest = manifest.model_copy(update={"key_id": signer.key_id})
    uploaded = reused = 0
    for entry in manifest.files:
        key = blob_key(entry.sha256)
        if store.exists(key) and store.stat(key).size == entry.size:
            reused += entry.size
            continue
        store.put(key, folder / entry.path, content_type="application/octet-stream")
        uploaded += entry.size
    if reference is not None:
        publish_reference_rows(store, signer, manifest, reference)
    data = canonical_json(manifest.model_dump(mode="json"))
    key = manifest_key(manifest.model, manifest.version, manifest.profile)
    store.put(key + ".sig", signer.sign(data), content_type="application/json")
    store.put(key, data, content_type="application/json")
    return BuildResult(manifest, key, uploaded, reused)


def _manifest(
    report: ExportReport,
    spec: Spec,
    rows: pd.DataFrame,
    training: pd.DataFrame | None,
    model: Any,
    run_id: str,
    profile: FirmwareProfile,
    trained_for: GroupRows | None = None,
) -> Manifest:
    """Everything but files, golden outputs and output names, which need the staged model."""
    import mlflow

    client = mlflow.MlflowClient()
    layout = input_layout(spec)
    now = datetime.now(UTC)
    return Manifest(
        model=report.model,
        version=int(report.version),
        profile=profile.name,
        runtime=profile.runtime,
        precision=report.precision,  # what the file computes in (a tree stays fp32 under an int8 profile)
        created=now.isoformat(timespec="seconds"),
        expires=now.isoformat(timespec="seconds"),
        files=[],
        inputs=[],
        outputs=Outputs(
            task=spec.task,
            names=[],
            labels=[str(c) for c in model[-1].classes_] if hasattr(model[-1], "classes_") else None,
        ),
        windows=Windows(
            entity=spec.schema_.entity, timestamp=spec.schema_.timestamp, features=spec.features.window
        )
        if spec.features.window and spec.schema_.timestamp
        else None,
        reference=_reference(model, spec, layout, rows, training, trained_for),
        golden=Golden(
            inputs=_golden_rows(spec, rows, training, layout),
            outputs={},
            tolerance=profile.tolerance.max_abs_diff,
        ),
        metrics={
            k: float(v)
            for k, v in sorted(client.get_run(run_id).data.metrics.items())
            if k.startswith("holdout_")
        },
        export=asdict(report),
        compliance=spec.compliance,
        min_bin_count=spec.min_bin_count if spec.compliance == "hipaa" else None,
        retention_days=spec.retention_days,
        gate=spec.rollout.gate,
        mlflow_run_id=run_id,
        snapshot=client.get_model_version(report.model, report.version).tags.get("snapshot", ""),
        key_id="",
    )


def build_bundle(
    model_uri: str,
    profile_name: str,
    settings: Settings,
    store: ObjectStore,
    signer: Signer,
    *,
    tracking: str | None = None,
    expires_days: int = EXPIRES_DAYS,
    groups: Sequence[str] = (),
    since_snapshot: str | None = None,
    resolved: ModelVersion | None = None,
) -> BuildResult:
    """Export, describe, sign and publish one bundle; see the module docstring. ``groups`` and
    ``since_snapshot``: the version was trained for those groups on the data landed since that
    snapshot, and its manifest carries their own reference (:mod:`edgeml.bundle.groups`).
    ``resolved``: ``model_uri`` already loaded (one load serves every profile of a pipeline run)."""
    from edgeml.train.tracking import tracking_uri

    if expires_days < 1:
        raise UserError(f"--expires-days {expires_days} must be at least 1")
    profile = get_profile(profile_name, settings.home)
    resolved = resolved or resolve_model_version(model_uri, tracking_uri(settings, tracking))
    name, version, run_id, _family, snapshot, model = resolved
    exact = f"models:/{name}/{version}"
    folder = default_export_dir(settings, exact, profile.name)
    report = export_model(exact, profile.name, folder, settings, tracking, resolved=resolved)
    with tempfile.TemporaryDirectory() as tmp:
        spec, rows = load_kept_artifacts(run_id, Path(tmp), settings)
    layout = input_layout(spec)
    split = _snapshot_rows(spec, settings, snapshot, layout) if snapshot else None
    training = split.inputs if split is not None else None
    trained_for = None
    if snapshot and groups and since_snapshot and since_snapshot != snapshot:
        old = _snapshot_rows(spec, settings, since_snapshot, layout)
        trained_for = rows_for_groups(
            spec, settings, snapshot, since_snapshot, groups, layout, old.inputs if old is not None else None
        )
    draft = _manifest(report, spec, rows, training, model, run_id, profile, trained_for)
    bundle = Path(tempfile.mkdtemp(prefix="edgeml-bundle-"))
    try:
        if profile.runtime == "onnxruntime":
            files = _split_weights(folder / "model.onnx", bundle)
        else:
            for file in ("model.xml", "model.bin"):
                shutil.copyfile(folder / file, bundle / file)
            files = [_entry(bundle / "model.xml"), _entry(bundle / "model.bin")]
        draft = draft.model_copy(
            update={
                "files": files,
                "inputs": _input_fields(spec, input_layout(spec), _graph_dtypes(bundle, profile.runtime)),
                "expires": (datetime.fromisoformat(draft.created) + timedelta(days=expires_days)).isoformat(),
            }
        )
        # The golden outputs are what the device runtime gives for the golden inputs.
        runtime = ModelRuntime(bundle, draft, threads=profile.threads)
        outputs = runtime.predict_records(draft.golden.inputs)
        golden = draft.golden.model_copy(
            update={"outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}}
        )
        manifest = draft.model_copy(
            update={
                "outputs": draft.outputs.model_copy(update={"names": runtime.output_names}),
                "golden": golden,
            }
        )
        # model_copy does not validate; the published manifest must
        manifest = Manifest.model_validate(manifest.model_dump())
        # NannyML's reference rows: holdout rows through the same runtime as the golden samples
        allowed = spec.compliance == "none"  # else no rows leave: none are drawn
        nannyml = _nannyml_rows(rows, split, trained_for, layout) if allowed else rows.head(0)
        reference = reference_frame(runtime, manifest, nannyml, nannyml.get(TARGET_COLUMN))
        result = publish_bundle(store, signer, manifest, bundle, reference)
        audit_build(AuditLog(store), result.manifest, spec.fingerprint(), cli_actor())
        return result
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
