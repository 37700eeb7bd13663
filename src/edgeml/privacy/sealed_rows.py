"""hipaa: the data rows MLflow keeps with a run, sealed with the store's key.

Each training run keeps up to 2,000 holdout rows (``edgeml/holdout.parquet``) for export's parity
check and erasure's rewrite. Under ``compliance: hipaa`` the file is written sealed, in the format
and with the key of the sealed local store (:mod:`edgeml.store.sealed`: AES-256-GCM in 64 KiB
chunks, each bound to the run and the artifact's path, so a file copied into another run fails to
open), and the run is tagged ``edgeml.kept_rows = sealed``. Every reader — export's parity check,
bundle building, ``edgeml data erase`` — opens the file through that key, and one read without it
is a :class:`~edgeml.errors.UserError` naming the key.

The key is the local store's (its ``<store>.sealed.json`` names it). With no sealed local store
(S3/MinIO with server-side encryption, or ``memory://``), the key file ``keys/store.key`` in the
appliance home is made if missing and named by ``<home>/mlartifacts.sealed.json``, the same way.
The content says which file is which: a sealed file starts with the store's ``MAGIC``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from edgeml.errors import StoreError, UserError
from edgeml.store.sealed import MAGIC, Sealer, seal_with_new_key, sealing_key, sealing_key_file

if TYPE_CHECKING:
    from edgeml.settings import Settings

__all__ = ["SEALED_TAG", "KeptRowsKey", "is_sealed", "kept_rows_key", "read_rows", "write_rows"]

#: the run tag saying its kept rows are sealed (a mode, no value): erasure checks its key first
SEALED_TAG = "edgeml.kept_rows"


@dataclass(frozen=True)
class KeptRowsKey:
    """The key MLflow's kept rows are sealed with: ``sealer`` None when there is none here;
    ``described`` says where it is (or was looked for), for errors."""

    sealer: Sealer | None
    described: str


def _artifacts_marker_target(settings: Settings) -> Path:
    return settings.home / "mlartifacts"


def kept_rows_key(settings: Settings, *, create: bool = False) -> KeptRowsKey:
    """The key to seal and open MLflow's kept rows with: the sealed local store's, else the one the
    appliance home's ``mlartifacts.sealed.json`` names (made with ``create``, for a hipaa run)."""
    from edgeml.store import store_from_settings
    from edgeml.store.local import LocalStore

    store = store_from_settings(settings)
    if isinstance(store, LocalStore):
        key = sealing_key(store.root, "store")
        if key is not None:
            return KeptRowsKey(Sealer(key), f"the store's key {sealing_key_file(store.root)}")
    target = _artifacts_marker_target(settings)
    if sealing_key_file(target) is None and create:
        seal_with_new_key(target, settings.home / "keys" / "store.key")
    key = sealing_key(target, "MLflow kept rows")
    marker = target.with_name(target.name + ".sealed.json")
    if key is None:
        looked = f"the sealed store's key, or the one {marker} names"
        if isinstance(store, LocalStore):
            looked = (
                f"the store's key (named by {store.root.with_name(store.root.name + '.sealed.json')}), "
                f"or the one {marker} names"
            )
        return KeptRowsKey(None, looked)
    return KeptRowsKey(Sealer(key), f"the key {sealing_key_file(target)} (named by {marker})")


def _object(run_id: str, artifact: str) -> str:
    """What each sealed chunk is bound to: the run and the artifact's path in it."""
    return f"mlflow/{run_id}/{artifact}"


def is_sealed(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def write_rows(
    rows: pd.DataFrame, path: Path, *, run_id: str, artifact: str, key: KeptRowsKey | None
) -> None:
    """Write ``rows`` as Parquet at ``path``: sealed for ``run_id``'s ``artifact`` when ``key`` has a
    sealer, else in clear."""
    if key is None:
        rows.to_parquet(path, index=False)
        return
    if key.sealer is None:
        raise UserError(
            f"MLflow's kept rows are to be sealed, and there is no key: looked for {key.described}"
        )
    plain = io.BytesIO()
    rows.to_parquet(plain, index=False)
    plain.seek(0)
    with path.open("wb") as out:
        key.sealer.seal(_object(run_id, artifact), plain, out)


def read_rows(path: Path, *, run_id: str, artifact: str, key: KeptRowsKey | None) -> pd.DataFrame:
    """The rows of the Parquet file at ``path``, opened through ``key`` when it is sealed; a
    UserError naming the key when it is sealed and ``key`` cannot open it."""
    if not is_sealed(path):
        return pd.read_parquet(path)
    what = f"the kept rows {artifact} of MLflow run {run_id} are sealed (compliance hipaa)"
    if key is None or key.sealer is None:
        looked = key.described if key is not None else "no key was given"
        raise UserError(
            f"{what} and there is no key here to open them: looked for {looked}",
            hint="run this on the appliance that trained the model, whose keys/store.key seals them",
        )
    try:
        with path.open("rb") as fh:
            plain = b"".join(key.sealer.open(_object(run_id, artifact), fh, path.stat().st_size, 0, None))
    except StoreError as exc:
        raise UserError(
            f"{what} and {key.described} does not open them: another appliance's key, or the file was "
            f"altered or copied from another run ({exc})",
            hint="put back the key that sealed them",
        ) from exc
    return pd.read_parquet(io.BytesIO(plain))
