"""``edgeml keys``, ``edgeml bundle`` and ``edgeml rollout``: sign, publish, verify, roll out."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from edgeml.cli._context import CliState, console, err_console
from edgeml.cli.train import TrackingOpt

if TYPE_CHECKING:
    from edgeml.bundle.channels import ChannelPointer
    from edgeml.bundle.keys import KeyRing
    from edgeml.bundle.rollout import ChannelState
    from edgeml.store import ObjectStore

keys_app = typer.Typer(
    help="Ed25519 signing keys and the public key ring devices trust.", no_args_is_help=True
)
bundle_app = typer.Typer(help="Signed model bundles: build, publish, verify.", no_args_is_help=True)
rollout_app = typer.Typer(help="Channel pointers: which version devices run.", no_args_is_help=True)

KeyringOpt = Annotated[
    Path | None,
    typer.Option(
        "--keyring",
        help="Folder of trusted <key id>.pub files (what devices hold); default: this appliance's own keys.",
        file_okay=False,
    ),
]
RecoverOpt = Annotated[
    bool,
    typer.Option(
        "--recover",
        help="Re-establish a channel whose stored pointer does not verify (planted, unsigned, another "
        "model's, an old one replayed): sign a new one at a serial above any seen. Audited; give --reason.",
    ),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")]
ApproversOpt = Annotated[
    Path | None,
    typer.Option(
        "--approvers",
        help="Folder of the approvers' public keys (<key id>.pub): under compliance sox, stable needs an "
        "approval signed by one of them. Default: $EDGEML_HOME/approvers when it exists.",
        file_okay=False,
    ),
]


def _approvers(ctx: typer.Context, folder: Path | None) -> KeyRing | None:
    from edgeml.bundle.keys import KeyRing

    if folder is not None:
        return KeyRing.from_dir(folder)  # a folder given that holds no key is refused, not ignored
    default = _home(ctx) / "approvers"
    return KeyRing.from_dir(default) if default.is_dir() else None


TtlOpt = Annotated[
    int, typer.Option("--ttl-days", min=1, help="Days until devices refuse this pointer unless re-published.")
]


def _store(ctx: typer.Context) -> ObjectStore:
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    return store_from_settings(state.settings())


def _home(ctx: typer.Context) -> Path:
    state: CliState = ctx.obj
    return state.settings().home


# ------------------------------------------------------------------------------ keys


@keys_app.command("init")
def keys_init(ctx: typer.Context) -> None:
    """Create the first signing key (refused when keys exist: rotating is `keys rotate`)."""
    from edgeml.bundle.keys import init_keys

    info = init_keys(_home(ctx))
    _audit_keys(ctx, "keys.init", info.key_id)
    console.print(f"signing key {info.key_id} created: {info.path} (mode 0600)")
    console.print("give devices its public half: `edgeml keys export-public --out DIR`")


@keys_app.command("rotate")
def keys_rotate(ctx: typer.Context) -> None:
    """Add a new signing key and sign with it from now on; older keys stay in the ring."""
    from edgeml.bundle.keys import rotate_keys

    info = rotate_keys(_home(ctx))
    _audit_keys(ctx, "keys.rotate", info.key_id)
    console.print(f"signing key {info.key_id} is now active; distribute the ring before publishing with it")


def _audit_keys(ctx: typer.Context, action: str, key_id: str) -> None:
    from edgeml.audit import AuditLog, cli_actor

    AuditLog(_store(ctx)).append(cli_actor(), action, key_id, after={"active": key_id})


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """Every signing key: id, creation time, which one signs."""
    from edgeml.bundle.keys import list_keys

    for info in list_keys(_home(ctx)):
        active = "  [bold]active[/]" if info.active else ""
        console.print(f"{info.key_id}  created {info.created}  {info.path}{active}")


@keys_app.command("export-public")
def keys_export_public(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", help="Key-ring folder to write <key id>.pub files into.", file_okay=False)
    ],
) -> None:
    """Write the public keys devices must trust (all of them, for rotation) into a key-ring folder."""
    from edgeml.bundle.keys import export_public

    for path in export_public(_home(ctx), out):
        console.print(f"wrote {path}")


# ---------------------------------------------------------------------------- bundle


@bundle_app.command("build")
def bundle_build(
    ctx: typer.Context,
    model_uri: Annotated[str, typer.Argument(help="Registered model, e.g. models:/pump-faults@challenger.")],
    profile: Annotated[
        list[str],
        typer.Option("--profile", help="Firmware profile (repeat for several; `edgeml profiles list`)."),
    ],
    expires_days: Annotated[
        int, typer.Option("--expires-days", min=1, help="Days until devices refuse the bundle.")
    ] = 180,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Export, sign and publish a bundle per profile: content-addressed blobs and a signed manifest.

    Blobs already on the store (same sha256) are not uploaded again.
    """
    from edgeml.bundle.build import build_bundle
    from edgeml.bundle.keys import load_signer

    state: CliState = ctx.obj
    settings = state.settings()
    signer = load_signer(settings.home)
    store = _store(ctx)
    for name in profile:
        with console.status(f"building {model_uri} for {name}"):
            result = build_bundle(
                model_uri, name, settings, store, signer, tracking=tracking_uri, expires_days=expires_days
            )
        m = result.manifest
        console.print(f"[bold]{m.model} v{m.version} for {m.profile}[/] ({m.runtime}, {m.precision})")
        console.print(f"  manifest   {store.url}/{result.key} (+ .sig, key {m.key_id})")
        console.print(f"  files      {', '.join(f'{f.path} {f.size:,} B' for f in m.files)}")
        console.print(
            f"  uploaded   {result.uploaded_bytes:,} bytes; {result.reused_bytes:,} already on the store"
        )
        console.print(f"  golden     {len(m.golden.inputs)} samples, tolerance {m.golden.tolerance:g}")
        console.print(f"  reference  {m.reference.rows:,} holdout rows, {len(m.reference.features)} inputs")
        console.print(f"  expires    {m.expires}")


def _ring(ctx: typer.Context, keyring: Path | None) -> KeyRing:
    from edgeml.bundle.keys import KeyRing

    return KeyRing.from_dir(keyring) if keyring else KeyRing.from_home(_home(ctx))


@bundle_app.command("verify")
def bundle_verify(
    ctx: typer.Context,
    uri: Annotated[
        str,
        typer.Argument(
            help="MODEL/VERSION/PROFILE or a manifest key on the store, or a local bundle folder."
        ),
    ],
    keyring: KeyringOpt = None,
    min_version: Annotated[
        int | None, typer.Option("--min-version", help="Refuse versions older than this (a device's last).")
    ] = None,
) -> None:
    """Run every check a device runs: signature, expiry, version, file names and types, sizes, digests.

    Exits 3 with the reason when the bundle is rejected.
    """
    from edgeml.bundle.verify import fetch_bundle, verify_folder

    ring = _ring(ctx, keyring)
    local = Path(uri)
    if local.is_dir():
        manifest = verify_folder(local, ring)
        console.print(
            f"OK {manifest.model} v{manifest.version} ({manifest.profile}) in {local}: "
            f"signed by {manifest.key_id}"
        )
        return
    key = _manifest_key(uri)
    staging = Path(tempfile.mkdtemp(prefix="edgeml-verify-"))
    try:
        staged = fetch_bundle(_store(ctx), key, ring, staging, min_version=min_version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    m = staged.manifest
    console.print(
        f"OK {m.model} v{m.version} ({m.profile}): signed by {m.key_id}, expires {m.expires}, "
        f"{len(m.files)} file(s), {staged.downloaded_bytes:,} bytes checked"
    )


def _manifest_key(uri: str) -> str:
    """The store key of MODEL/VERSION/PROFILE (or a manifest key as given); the manifest read
    there must name exactly that model, version and profile (fetch_bundle checks)."""
    from edgeml.errors import UserError

    if uri.endswith("manifest.json"):
        return uri
    parts = uri.strip("/").split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not all(parts):
        raise UserError(
            f"{uri!r} is not MODEL/VERSION/PROFILE (e.g. pump-faults/3/x86-64-generic), a manifest key "
            "or a bundle folder"
        )
    return f"bundles/{parts[0]}/{int(parts[1])}/{parts[2]}/manifest.json"


@bundle_app.command("show")
def bundle_show(
    ctx: typer.Context,
    uri: Annotated[str, typer.Argument(help="MODEL/VERSION/PROFILE or a manifest key on the store.")],
) -> None:
    """Print a published manifest (JSON)."""
    key = uri if uri.endswith("manifest.json") else f"bundles/{uri.strip('/')}/manifest.json"
    console.print_json(_store(ctx).get(key).decode())


# --------------------------------------------------------------------------- rollout


def _print_pointer(pointer: ChannelPointer) -> None:
    groups = ", ".join(pointer.groups) or "all groups"
    line = (
        f"{pointer.model} {pointer.channel}: v{pointer.version} (serial {pointer.serial}) to "
        f"{pointer.canary_percent:g}% of {groups}; profiles {', '.join(sorted(pointer.manifests))}; "
        f"expires {pointer.expires}"
    )
    if pointer.rollback:
        line += f"; ROLLBACK from v{pointer.rollback.from_version}"
        line += f" ({pointer.rollback.reason})" if pointer.rollback.reason else ""
    console.print(line)


@rollout_app.command("publish")
def rollout_publish(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Model version with published bundles.", min=1)],
    channel: Annotated[str, typer.Option("--channel", help="stable or canary.")] = "stable",
    percent: Annotated[
        float | None,
        typer.Option(
            "--percent", help="Share of matching devices that follow (default: canary 10, stable 100)."
        ),
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Device group that follows (repeat; default: all).")
    ] = None,
    ttl_days: TtlOpt = 30,
    reason: ReasonOpt = "",
    recover: RecoverOpt = False,
    approvers: ApproversOpt = None,
) -> None:
    """Point a channel at a version. Versions only move forward; going back is `rollout rollback`.

    The stored pointer must verify first (signature, model and channel, serial); exits 2 naming
    the problem when it does not, unless --recover.
    """
    from edgeml.bundle.keys import load_signer
    from edgeml.bundle.rollout import publish

    pointer = publish(
        _store(ctx),
        load_signer(_home(ctx)),
        model,
        version,
        channel,
        percent=percent,
        groups=group,
        ttl_days=ttl_days,
        reason=reason,
        recover=recover,
        approvers=_approvers(ctx, approvers),
    )
    _print_pointer(pointer)


@rollout_app.command("promote")
def rollout_promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    ttl_days: TtlOpt = 30,
    reason: ReasonOpt = "",
    recover: RecoverOpt = False,
    approvers: ApproversOpt = None,
) -> None:
    """Make the canary's version stable for every device (both pointers must verify first; under
    compliance sox, a second key's approval too: `edgeml rollout approve`)."""
    from edgeml.bundle.keys import load_signer
    from edgeml.bundle.rollout import promote

    signer = load_signer(_home(ctx))
    ring = _approvers(ctx, approvers)
    pointer = promote(
        _store(ctx), signer, model, ttl_days=ttl_days, reason=reason, recover=recover, approvers=ring
    )
    _print_pointer(pointer)


@rollout_app.command("rollback")
def rollout_rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    to: Annotated[int, typer.Option("--to", help="The older version to go back to.", min=1)],
    channel: Annotated[str, typer.Option("--channel", help="stable or canary.")] = "stable",
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the signed pointer.")] = "",
    ttl_days: TtlOpt = 30,
    recover: RecoverOpt = False,
    approvers: ApproversOpt = None,
) -> None:
    """Send a channel back to an older version, explicitly: the signed pointer records the rollback
    (under compliance sox, stable goes back only to a version a second key approved)."""
    from edgeml.bundle.keys import load_signer
    from edgeml.bundle.rollout import rollback

    signer = load_signer(_home(ctx))
    ring = _approvers(ctx, approvers)
    for pointer in rollback(
        _store(ctx),
        signer,
        model,
        channel,
        to,
        reason=reason,
        ttl_days=ttl_days,
        recover=recover,
        approvers=ring,
    ):
        _print_pointer(pointer)


@rollout_app.command("status")
def rollout_status(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the pointers as JSON.")] = False,
    keyring: KeyringOpt = None,
) -> None:
    """Where each channel points; a pointer that does not verify is named (exit 3)."""
    from edgeml.bundle.channels import CHANNELS
    from edgeml.bundle.rollout import inspect

    store, ring = _store(ctx), _ring(ctx, keyring)
    states = [inspect(store, ring, model, channel) for channel in CHANNELS]
    pointers = {s.channel: s.pointer for s in states if s.pointer is not None}
    if as_json:
        console.print_json(json.dumps({c: p.model_dump(mode="json") for c, p in pointers.items()}))
    else:
        if not pointers and not any(s.problem for s in states):
            console.print(f"{model} has no channels yet: `edgeml rollout publish {model} VERSION`")
        for pointer in pointers.values():
            _print_pointer(pointer)
    _report_problems(model, states)


def _report_problems(model: str, states: list[ChannelState]) -> None:
    problems = [s for s in states if s.problem is not None]
    for state in problems:
        assert state.problem is not None
        err_console.print(
            f"[bold red]{model} {state.channel} does not verify:[/] {escape(str(state.problem))}"
        )
    if problems:
        err_console.print(
            f"[yellow]hint:[/] `edgeml rollout publish {model} VERSION --recover` re-establishes it"
        )
        raise typer.Exit(3)


@rollout_app.command("verify")
def rollout_verify(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    keyring: KeyringOpt = None,
) -> None:
    """Check each channel as a device does: the pointer (signature, model, channel, expiry) and every
    bundle it names (digest, model, version, profile, files). Exits 3 naming what fails."""
    from edgeml.bundle.channels import CHANNELS, pointer_key, verify_pointer
    from edgeml.bundle.verify import Context, fetch_bundle
    from edgeml.errors import BundleRejected, ObjectNotFoundError

    store, ring = _store(ctx), _ring(ctx, keyring)
    failed = found = 0
    for channel in CHANNELS:
        key = pointer_key(model, channel)
        try:
            data, signature = store.get(key), store.get(key + ".sig")
        except ObjectNotFoundError:
            continue
        found += 1
        try:
            pointer = verify_pointer(data, signature, ring, model=model, channel=channel)
            staging = Path(tempfile.mkdtemp(prefix="edgeml-verify-"))
            try:
                for profile, ref in sorted(pointer.manifests.items()):
                    context = Context(model, pointer.version, profile, source=f"the {channel} pointer")
                    fetch_bundle(store, ref.key, ring, staging, context=context, sha256=ref.sha256)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        except BundleRejected as exc:
            failed += 1
            err_console.print(f"[bold red]{model} {channel} rejected:[/] {escape(str(exc))}")
            continue
        console.print(
            f"OK {model} {channel}: v{pointer.version} (serial {pointer.serial}), "
            f"{len(pointer.manifests)} bundle(s) verified"
        )
    if not found:
        console.print(f"{model} has no channels yet")
    if failed:
        raise typer.Exit(3)


# ----------------------------------------------------------------------------- audit

audit_app = typer.Typer(
    help="The tamper-evident audit trail of rollouts, keys, devices and automatic actions."
)


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the last N entries.")] = 50,
) -> None:
    """The latest entries: when, who, what, to what, why."""
    from edgeml.audit import AuditLog

    for entry in AuditLog(_store(ctx)).entries()[-limit:]:
        change = f"{entry.before} -> {entry.after}" if entry.before is not None else f"{entry.after}"
        why = f" ({entry.reason})" if entry.reason else ""
        console.print(
            f"{entry.seq:>5} {entry.at} {entry.actor} {entry.action} {entry.subject}: {change}{why}",
            markup=False,
        )


@audit_app.command("verify")
def audit_verify(ctx: typer.Context) -> None:
    """Recompute the hash chain; exit 3 naming every edited, deleted or moved entry."""
    from edgeml.audit import AuditLog

    log = AuditLog(_store(ctx))
    problems = log.verify()
    if problems:
        for problem in problems:
            err_console.print(f"[bold red]tampered:[/] {problem}")
        raise typer.Exit(3)
    console.print(f"audit trail intact: {len(log.entries())} entries, hash chain verified")


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write.", dir_okay=False)],
    since: Annotated[str | None, typer.Option("--since", help="First time included (ISO, UTC).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="First time left out (ISO, UTC).")] = None,
) -> None:
    """Entries in a time range, with their hash chain, for auditors to verify offline."""
    from edgeml.audit import AuditLog, export_lines, parse_when

    start, end = parse_when("--since", since), parse_when("--until", until)
    lines = export_lines(AuditLog(_store(ctx)).entries(), start, end)
    out.write_bytes(b"".join(line + b"\n" for line in lines))
    console.print(f"{len(lines)} audit entries written to {out}")


@audit_app.command("verify-export")
def audit_verify_export(
    path: Annotated[
        Path, typer.Argument(help="A file `edgeml audit export` wrote.", exists=True, dir_okay=False)
    ],
) -> None:
    """Check an export offline: every entry's hash and the chain between them; exit 3 when broken."""
    from edgeml.audit import verify_lines

    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    problems = verify_lines(lines)
    for problem in problems:
        err_console.print(f"[bold red]tampered:[/] {problem}")
    if problems:
        raise typer.Exit(3)
    console.print(f"export intact: {len(lines)} entries, hash chain verified")


@rollout_app.command("approve")
def rollout_approve(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="The version on canary to approve for stable.", min=1)],
    keys: Annotated[
        Path,
        typer.Option(
            "--keys",
            help="Your own key home (`edgeml --home DIR keys init`), not the publisher's.",
            file_okay=False,
        ),
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit trail.")] = "",
) -> None:
    """Approve the canary's version for stable with a second key (sox: separation of duties)."""
    from edgeml.audit import cli_actor
    from edgeml.bundle.approval import approve
    from edgeml.bundle.keys import load_signer

    approval = approve(_store(ctx), load_signer(keys), model, version, actor=cli_actor(), reason=reason)
    console.print(
        f"{model} v{version} approved for stable by key {approval.key_id} "
        f"(published by {approval.publisher_key_id}); valid until {approval.expires}"
    )
