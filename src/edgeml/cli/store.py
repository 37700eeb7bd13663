"""``edgeml store``: look into and check the appliance's object store."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress
from rich.table import Table

if TYPE_CHECKING:
    from edgeml.store import ObjectStore

from edgeml.cli._context import CliState, console, err_console
from edgeml.errors import StoreError

app = typer.Typer(help="Inspect and check the object store (local folder or S3/MinIO).", no_args_is_help=True)


def _store(ctx: typer.Context) -> ObjectStore:
    from edgeml.store import store_from_settings

    state: CliState = ctx.obj
    return store_from_settings(state.settings())


@app.command("ls")
def list_objects(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this (e.g. lake/).")] = "",
) -> None:
    """List objects: key, size and modification time."""
    store = _store(ctx)
    table = Table("key", "size", "modified", box=None)
    count = total = 0
    for info in store.list(prefix):
        table.add_row(
            info.key, f"{info.size:,}", info.modified.isoformat(timespec="seconds") if info.modified else ""
        )
        count += 1
        total += info.size
    console.print(table)
    err_console.print(f"{count} object(s), {total:,} bytes in {store.url}")


@app.command("cat")
def cat(ctx: typer.Context, key: Annotated[str, typer.Argument(help="Object key.")]) -> None:
    """Write one object's content to stdout (a read of a dataset's rows is audited)."""
    from edgeml.privacy.access import record_object_read

    store = _store(ctx)
    stream = store.stream(key)  # a missing key fails here, before anything is recorded
    record_object_read(store, key)
    for chunk in stream:
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@app.command("put")
def put(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Object key to write.")],
    file: Annotated[Path, typer.Argument(help="Local file to upload.", exists=True, dir_okay=False)],
) -> None:
    """Upload a file atomically under KEY."""
    info = _store(ctx).put(key, file)
    console.print(f"{info.key}: {info.size:,} bytes, sha256 {info.sha256}")


@app.command("get")
def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Object key to fetch.")],
    dest: Annotated[Path, typer.Argument(help="Local file to write (atomically).", dir_okay=False)],
) -> None:
    """Download KEY to a local file, verifying its sha256 (a read of a dataset's rows is audited)."""
    from edgeml.privacy.access import record_object_read

    store = _store(ctx)
    info = store.download(key, dest)
    record_object_read(store, key)
    console.print(f"{dest}: {info.size:,} bytes, sha256 {info.sha256}")


@app.command("rm")
def remove(ctx: typer.Context, key: Annotated[str, typer.Argument(help="Object key to delete.")]) -> None:
    """Delete one object (deleting a missing key is not an error; audit entries are kept 7 years)."""
    from edgeml.audit import check_delete

    store = _store(ctx)
    check_delete(store, key)
    store.delete(key)


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Check the store is reachable and writable: put, read back, verify, delete a probe object."""
    store = _store(ctx)
    key = f"_edgeml/probe-{uuid.uuid4().hex}"
    payload = uuid.uuid4().bytes * 64
    written = store.put(key, payload)
    try:
        if store.get(key) != payload or store.stat(key).sha256 != written.sha256:
            raise StoreError(f"{store.url}: a probe object read back differently than written")
    finally:
        store.delete(key)
    console.print(f"[green]✓[/] {store.url}: write, read, verify and delete all work")


@app.command("policy")
def policy(
    ctx: typer.Context,
    device: Annotated[bool, typer.Option("--device", help="The read-only policy for edge devices.")] = False,
) -> None:
    """Print an S3/MinIO access policy (IAM JSON) for this store.

    `--device`: read and list blobs/, bundles/ and channels/ only; no writes. Apply it with
    `mc admin policy create ALIAS edgeml-device FILE` (the Ansible minio role does).
    """
    import json

    from edgeml.store.policy import device_policy

    if not device:
        raise typer.BadParameter("say which policy: --device", param_hint="--device")
    state: CliState = ctx.obj
    print(json.dumps(device_policy(state.settings().store_url), indent=2))


@app.command("seal")
def seal(ctx: typer.Context) -> None:
    """Encrypt the local folder store at rest (AES-256-GCM, key in the appliance home).

    An empty store is sealed from now on. A store holding objects in clear has each sealed in place,
    one at a time and atomically (stop the appliance's writers first; readers refuse a clear object
    until its turn): interrupted, run it again to finish. On a sealed store it checks that every
    object opens with the store's key and changes nothing.
    """
    from edgeml.audit import AuditLog, cli_actor
    from edgeml.store.local import LocalStore
    from edgeml.store.seal_existing import seal_existing
    from edgeml.store.sealed import enable_sealing, sealing_key_file

    state: CliState = ctx.obj
    store = _store(ctx)  # a sealed store whose key cannot be read is refused here, naming the key
    if not isinstance(store, LocalStore):
        err_console.print(
            "error: only a local folder store is sealed here; for S3/MinIO set "
            "store.s3.server_side_encryption"
        )
        raise typer.Exit(2)
    key = sealing_key_file(store.root)
    marked = key is None
    if key is None:
        key = enable_sealing(store.root, state.settings().home)
    store = LocalStore(store.root)  # opened again: now with the key
    total = len(store.keys())
    counts = {"sealed": 0, "already": 0}
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("sealing objects", total=total)
        for step in seal_existing(store):
            counts[step.outcome] += 1
            progress.advance(task)
    if marked or counts["sealed"]:
        AuditLog(store).append(
            cli_actor(),
            "store.seal",
            store.url,
            after={"key_file": str(key), **counts},
            reason="edgeml store seal",
        )
    if not total:
        console.print(
            f"{store.url} is sealed from now on; its key is {key} (back it up: lost, the data is lost)"
        )
        return
    console.print(
        f"{store.url} is sealed: {counts['sealed']:,} object(s) sealed in place, "
        f"{counts['already']:,} already sealed; its key is {key} "
        "(back it up: lost, the data is lost)"
    )
