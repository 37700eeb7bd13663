"""``edgeml store``: look into and check the appliance's object store."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
    """Encrypt the local folder store at rest from now on (AES-256-GCM, key in the appliance home).

    Only an empty store can be sealed: objects written before would stay in clear.
    """
    from edgeml.store.local import LocalStore
    from edgeml.store.sealed import enable_sealing

    state: CliState = ctx.obj
    store = _store(ctx)
    if not isinstance(store, LocalStore):
        err_console.print(
            "error: only a local folder store is sealed here; for S3/MinIO set "
            "store.s3.server_side_encryption"
        )
        raise typer.Exit(2)
    if store.keys():
        err_console.print(f"error: {store.url} already holds objects; seal a new, empty store")
        raise typer.Exit(2)
    key = enable_sealing(store.root, state.settings().home)
    console.print(f"{store.url} is sealed from now on; its key is {key} (back it up: lost, the data is lost)")
