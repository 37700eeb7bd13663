"""The mission's parameters (``pipeline.type``, ``deployment_target``, ``data_volume``): their rules.

``EFFECTS`` says what each value does, for the reference (docs/spec.md); :func:`pipeline_issues`
is the part ``spec check`` refuses; :func:`pipeline_warnings` is what it warns about;
:func:`run_time_issues` is what the pipeline checks against the settings before any work.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from edgeml.errors import SpecIssue
from edgeml.spec.models import HttpSource, MqttSource, Pipeline, Spec

__all__ = [
    "EFFECTS",
    "STREAMED_FAMILIES",
    "pipeline_issues",
    "pipeline_warnings",
    "run_time_issues",
    "schedulable",
    "wants_every_bundle",
]

#: built-in profiles `edgeml serve` can run on the Ray cluster's x86-64 nodes
_CLUSTER_PROFILES = frozenset({"x86-64-generic", "intel-nuc-openvino", "intel-nuc-openvino-int8"})
_DEVICE_PROFILES = frozenset({"arm64-rpi4", "jetson-orin"})

EFFECTS: Mapping[str, Mapping[str, str]] = {
    "type": {
        "batch-training": "`edgeml pipeline schedule` runs the whole pipeline every `pipeline.schedule`; "
        "every source read (file, SQL, HTTP) is retried `pipeline.retries` times with doubling backoff",
        "real-time-inference": "bundles and a serving target are required: a profile whose export is "
        "refused stops the pipeline (instead of being skipped), and `pipeline.schedule` is refused",
        "streaming": "an MQTT source is required (landed by `edgeml stream`); window features run "
        "online on the agent with the same semantics as in training; `pipeline.schedule` is refused",
        "hybrid": "both batch-training and real-time-inference: scheduled runs and retries, and every "
        "profile's bundle required",
    },
    "deployment_target": {
        "edge": "signed bundles go to devices through the rollout channel (the default)",
        "on-premise": "`edgeml serve` runs the model on the Ray cluster: `profiles` must hold an x86-64 "
        "profile (x86-64-generic, intel-nuc-openvino[-int8])",
        "cloud": "the pipeline refuses to run unless the store is S3 over TLS (`s3://` store URL, "
        "EDGEML_S3_SECURE on), so bundles and telemetry reach devices over the internet",
        "hybrid": "both edge and on-premise: `profiles` must hold an x86-64 profile, bundles also go "
        "to devices",
    },
    "data_volume": {
        "small": "under 1 GB: training holds the whole training split in memory",
        "medium": "1 GB to 1 TB: validation and features stream over the snapshot's parts (always); "
        "training never loads the feature table: the train/validation/holdout split is made over "
        "every row, then each split is sampled (stratified by class, seeded) to at most "
        "`pipeline.sample_rows` rows; `logistic`, `linear` (both by SGD) and `mlp` train on every "
        "training row, streamed in batches, the other families on the sample; export, parity checks "
        "and signing run in a fresh process per profile, so the driver never holds the converter and "
        "a second copy of the model (`edgeml pipeline run` on a 2 GB source: bench/pipeline_memory); "
        "`spec check` warns about anything that would still load everything or train on a sample only",
        "large": "over 1 TB: as medium; `spec check` also refuses window features without "
        "`schema.entity` (one task would compute every window, time range after time range, on one core)",
    },
}


#: families that train on every row, batch by batch, with data_volume medium/large (the rest on a sample);
#: train/families.py's ``incremental`` builders, which a test keeps in step with this table
STREAMED_FAMILIES: Mapping[str, frozenset[str]] = {
    "classification": frozenset({"logistic", "mlp"}),
    "regression": frozenset({"linear", "mlp"}),
}


def schedulable(pipeline: Pipeline) -> bool:
    return pipeline.type in ("batch-training", "hybrid")


def wants_every_bundle(pipeline: Pipeline) -> bool:
    """Whether a refused export stops the pipeline (a serving target is required)."""
    return pipeline.type in ("real-time-inference", "hybrid")


def pipeline_issues(p: Mapping[str, Any]) -> Iterator[SpecIssue]:
    """``spec check`` errors: a parameter whose requirement the rest of the spec does not meet."""
    pipeline: Pipeline | None = p.get("pipeline")
    if pipeline is None:
        return
    sources = p.get("sources") or []
    if pipeline.type == "streaming" and sources and not any(isinstance(s, MqttSource) for s in sources):
        yield SpecIssue(
            "pipeline.type", "a streaming pipeline needs an MQTT source (kind: mqtt) in `sources`"
        )
    if pipeline.schedule is not None and not schedulable(pipeline):
        yield SpecIssue(
            "pipeline.schedule",
            f"a {pipeline.type} pipeline is not run on a schedule; only batch-training and hybrid are",
        )
    profiles = p.get("profiles") or []
    if pipeline.deployment_target in ("on-premise", "hybrid") and profiles:
        known = [name for name in profiles if name in _CLUSTER_PROFILES | _DEVICE_PROFILES]
        if len(known) == len(profiles) and not any(name in _CLUSTER_PROFILES for name in profiles):
            yield SpecIssue(
                "profiles",
                f"deployment_target {pipeline.deployment_target} serves on the Ray cluster, which needs "
                f"an x86-64 profile ({', '.join(sorted(_CLUSTER_PROFILES))}); these are device profiles",
            )
    schema = p.get("schema")
    features = p.get("features")
    if (
        pipeline.data_volume == "large"
        and schema is not None
        and schema.entity is None
        and features is not None
        and features.window
    ):
        yield SpecIssue(
            "features.window",
            "with data_volume large, window features need schema.entity: without it one task "
            "holds every row of the snapshot",
        )


def pipeline_warnings(spec: Spec) -> list[str]:
    """What a medium/large pipeline would still hold in memory, or do on a sample only."""
    pipeline = spec.pipeline
    if pipeline.data_volume == "small":
        return []
    warnings = []
    for i, source in enumerate(spec.sources):
        if isinstance(source, HttpSource) and source.pagination.kind == "none":
            warnings.append(
                f"sources[{i}]: HTTP source {source.name!r} has no pagination: one response holds "
                "everything it returns (set pagination)"
            )
    if spec.schema_.entity is None and spec.features.window:
        warnings.append(
            "features.window: without schema.entity every window feature is computed by one task, "
            "one time range after another (memory bounded, but on one core)"
        )
    streamed = STREAMED_FAMILIES.get(spec.task, frozenset())
    sampled = [f for f in spec.search.families if f not in streamed]
    every_row = [f for f in spec.search.families if f in streamed]
    if sampled:
        warnings.append(
            f"search.families: {', '.join(sampled)} fit in memory: they train on a stratified sample of "
            f"at most {pipeline.sample_rows:,} rows (pipeline.sample_rows), not on every row"
            + (f" ({', '.join(every_row)}: every row, in batches)" if every_row else "")
        )
    return warnings


def run_time_issues(spec: Spec, settings: Any) -> list[str]:
    """What the settings lack for the spec's deployment target (checked before any work)."""
    if spec.pipeline.deployment_target != "cloud":
        return []
    url: str = settings.store_url
    if not url.startswith("s3://"):
        return [
            f"deployment_target cloud needs an S3 store, not {url.split('://', 1)[0]}:// "
            "(set EDGEML_STORE_URL=s3://bucket)"
        ]
    if not settings.store.s3.secure:
        return ["deployment_target cloud needs TLS to the S3 store (EDGEML_S3_SECURE=true)"]
    return []
