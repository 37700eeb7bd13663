"""The spine: sources → lake → validation → features → training and gates → signed bundles → a channel.

Wires the stages and holds no stage logic. ``edgeml pipeline run`` calls it, so does the
demo, and so does retraining (the central node submits ``edgeml pipeline run`` as a job):
one path from data to devices, whoever starts it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Concatenate, ParamSpec

from edgeml.bundle.build import BuildResult, build_bundle
from edgeml.bundle.channels import ChannelPointer
from edgeml.bundle.keys import Signer, init_keys, list_keys, load_signer
from edgeml.bundle.rollout import publish
from edgeml.errors import EdgemlError, UserError
from edgeml.export.run import ModelVersion, resolve_model_version
from edgeml.features.build import FeatureReport, build_features
from edgeml.ingest.run import IngestReport, ingest
from edgeml.observability import set_span_attribute, span, span_from_env
from edgeml.settings import Settings
from edgeml.spec import Spec
from edgeml.store import store_from_settings
from edgeml.train.run import TrainReport, train
from edgeml.train.tracking import tracking_uri
from edgeml.validate import ValidationReport, validate

__all__ = ["PipelineResult", "Publication", "Stage", "ensure_signer", "quiet", "run_pipeline"]

P = ParamSpec("P")

#: opens one stage of progress: ``with stage("doing x") as say: say("did x")``
Stage = Callable[[str], AbstractContextManager[Callable[[str], None]]]


@contextmanager
def quiet(description: str) -> Iterator[Callable[[str], None]]:
    yield lambda text: None


@dataclass(frozen=True)
class Publication:
    """Where a model that passed its gates goes."""

    channel: str = "stable"
    percent: float | None = None
    groups: tuple[str, ...] = ()


@dataclass
class PipelineResult:
    ingest: IngestReport | None = None
    validation: ValidationReport | None = None
    features: FeatureReport | None = None
    training: TrainReport | None = None
    bundles: list[BuildResult] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # profile -> why its export was refused
    channel: ChannelPointer | None = None
    stopped: str = ""  # why the pipeline ended before publishing, if it did


def ensure_signer(settings: Settings) -> Signer:
    """The appliance's signing key, created on first use (the embedded default has no operator)
    and audited as created then (``keys.create``), as ``edgeml keys init`` audits its own."""
    if not list_keys(settings.home):
        from edgeml.audit import AuditLog, cli_actor
        from edgeml.bundle.trail import audit_key_created

        created = init_keys(settings.home)
        log = AuditLog(store_from_settings(settings))
        audit_key_created(log, created.key_id, cli_actor(), "created by `pipeline run` on first use")
    return load_signer(settings.home)


@contextmanager
def _traced(
    stage: Stage, span_name: str, description: str, **attributes: str
) -> Iterator[Callable[[str], None]]:
    """One stage: its progress line, inside a span named for the stage."""
    with span(span_name, **attributes), stage(description) as say:
        yield say


def _root_span(
    run: Callable[Concatenate[Spec, P], PipelineResult],
) -> Callable[Concatenate[Spec, P], PipelineResult]:
    """One root span per run (continuing a retraining job's ``$TRACEPARENT``), saying why it stopped."""

    @functools.wraps(run)
    def traced(spec: Spec, /, *args: P.args, **kwargs: P.kwargs) -> PipelineResult:
        with span_from_env("pipeline.run", spec=spec.name):
            result = run(spec, *args, **kwargs)
            if result.stopped:
                set_span_attribute("edgeml.stopped", result.stopped)
            return result

    return traced


def _bundle_apart(
    uri: str, profile: str, settings: Settings, groups: tuple[str, ...], since_snapshot: str | None
) -> BuildResult:
    """:func:`build_bundle` in a fresh process, for medium and large data: the driver has held
    the stages' libraries, Ray's client and the training sample, and Python keeps its heap; the
    export's converter and a second copy of the model would lift it past what one process may
    hold (bench/pipeline_memory). The child opens the store and the signing key itself; an
    EdgemlError comes back as the same kind (its message and hint), anything else as it is."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcome = pool.submit(_bundle_child, uri, profile, settings, groups, since_snapshot).result()
    if isinstance(outcome, BuildResult):
        return outcome
    user, exit_code, message, hint = outcome
    error = (UserError if user else EdgemlError)(message, hint=hint)
    error.exit_code = exit_code  # the CLI exits as the child's error says (a store error is not 1)
    raise error


def _bundle_child(
    uri: str, profile: str, settings: Settings, groups: tuple[str, ...], since_snapshot: str | None
) -> BuildResult | tuple[bool, int, str, str | None]:
    from edgeml._thirdparty import no_usage_reporting

    no_usage_reporting()
    try:
        store = store_from_settings(settings)
        return build_bundle(
            uri,
            profile,
            settings,
            store,
            load_signer(settings.home),
            groups=groups,
            since_snapshot=since_snapshot,
        )
    except EdgemlError as exc:  # not every error class unpickles (their own arguments)
        return isinstance(exc, UserError), exc.exit_code, exc.message, exc.hint


@_root_span
def run_pipeline(
    spec: Spec,
    settings: Settings,
    *,
    sources: list[str] | None = None,
    since_snapshot: str | None = None,
    publication: Publication | None = Publication(),
    stage: Stage = quiet,
) -> PipelineResult:
    """Run every stage; stop early (and say why in ``stopped``) on no new data or a failed gate."""
    from edgeml.spec.mission import run_time_issues, wants_every_bundle

    problems = run_time_issues(spec, settings)
    if problems:
        raise UserError("; ".join(problems), hint="see pipeline.deployment_target in docs/spec.md")
    result = PipelineResult()
    from edgeml.privacy.at_rest import require_encryption_at_rest

    require_encryption_at_rest(spec, settings)  # before the store is opened: it may seal it
    store = store_from_settings(settings)
    with _traced(stage, "pipeline.ingest", "ingesting with Ray Data") as say:
        result.ingest = ingest(spec, settings, only=sources, progress_bars=False, progress=say)
        snap = result.ingest.snapshot
        say(f"ingested snapshot {snap.id}: {snap.rows:,} rows")
    if since_snapshot and snap.id == since_snapshot:
        result.stopped = f"no data since snapshot {since_snapshot}: nothing new to train on"
        return result
    with _traced(stage, "pipeline.validate", "validating the snapshot") as say:
        result.validation = v = validate(spec, settings, snap.id)
        say(f"validated: {len(v.outcomes)} expectations, {v.rows_valid:,} valid rows")
    with _traced(stage, "pipeline.features", "building features") as say:
        result.features = build_features(spec, settings, snap.id)
        say(f"built {len(result.features.stats)} features")
    with _traced(stage, "pipeline.train", f"tuning and training ({spec.search.trials} trials)") as say:
        result.training = t = train(spec, settings, snap.id, progress=say)
        say(
            f"trained {t.model} v{t.version} ({t.family}), gates {'passed' if t.verdict.passed else 'failed'}"
        )
    if not t.verdict.passed:
        result.stopped = f"{t.model} v{t.version} failed its gates; nothing was published"
        return result
    signer = ensure_signer(settings)
    uri = f"models:/{t.model}/{t.version}"
    resolved: ModelVersion | None = None  # loaded once for every profile: a forest takes seconds
    for profile in spec.profiles:
        with _traced(
            stage,
            "pipeline.bundle",
            f"exporting for {profile}, proving parity, signing the bundle",
            profile=profile,
        ) as say:
            # trained for these groups on the data since: their own reference (bundle.groups)
            groups = tuple(publication.groups) if publication else ()
            try:
                if spec.pipeline.data_volume == "small":
                    resolved = resolved or resolve_model_version(uri, tracking_uri(settings, None))
                    built = build_bundle(
                        uri,
                        profile,
                        settings,
                        store,
                        signer,
                        groups=groups,
                        since_snapshot=since_snapshot,
                        resolved=resolved,
                    )
                else:
                    built = _bundle_apart(uri, profile, settings, groups, since_snapshot)
            except UserError as exc:  # e.g. a family this runtime cannot run: say why, go on
                result.refused[profile] = exc.message
                say(f"export for {profile} refused: {exc.message}")
                continue
            result.bundles.append(built)
            say(f"signed bundle {built.key} ({built.uploaded_bytes:,} bytes uploaded)")
    if result.refused and wants_every_bundle(spec.pipeline):
        result.stopped = (
            f"a {spec.pipeline.type} pipeline needs every profile's bundle; refused: "
            + ", ".join(result.refused)
        )
        return result
    if publication is None:
        return result
    if not result.bundles:
        result.stopped = "no profile could take the model; nothing was published"
        return result
    with _traced(stage, "pipeline.publish", f"publishing to the {publication.channel} channel") as say:
        result.channel = publish(
            store,
            signer,
            t.model,
            int(t.version),
            publication.channel,
            percent=publication.percent,
            groups=list(publication.groups),
        )
        say(f"{publication.channel} → {t.model} v{t.version}")
    return result
