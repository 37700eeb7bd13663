"""The telemetry file encrypted at rest (hipaa): DuckDB's own encrypted databases.

``edgeml central seal`` (before the node first starts) makes a 256-bit key, ``keys/telemetry.key``
(0600) in the appliance home, and a marker ``<db file>.sealed.json`` naming it — as the local
store is sealed (:mod:`edgeml.store.sealed`). From then on the store attaches the file with
``ENCRYPTION_KEY``: DuckDB encrypts every block, the write-ahead log and the files it spills to
(AES-256-GCM), and a file opened without the key is refused.

DuckDB writes encrypted files only with a secure random source, OpenSSL's, which its ``httpfs``
extension brings: the node loads it from the ``duckdb-extension-httpfs`` wheel when one built for
the running DuckDB is installed (a file in the package, no download), else the copy ``INSTALL
httpfs`` put in DuckDB's extension folder, and says how to get one when neither is there. DuckDB's
built-in fallback (mbedtls) draws nonces from a generator that is not cryptographically secure;
it is used only when ``EDGEML_TELEMETRY_UNSAFE_CRYPTO=1`` says so (tests and development
machines without the extension), never by default.

The node serves every mode and learns a model's from its signed manifest, so it cannot seal before
the first batch; it refuses, instead, to store a hipaa model's batch in a clear file
(:func:`refuse_clear_hipaa`, 503: the device keeps the batch and tries again).
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from edgeml.errors import StoreConfigError, Unavailable
from edgeml.store.sealed import seal_with_new_key, sealing_key

__all__ = [
    "HTTPFS_WHEEL",
    "UNSAFE_CRYPTO_ENV",
    "NotSealed",
    "encryption_key",
    "load_crypto",
    "packaged_httpfs",
    "refuse_clear_hipaa",
    "seal_telemetry_file",
]

#: set to 1 to let DuckDB encrypt with its built-in, not securely random, crypto module
UNSAFE_CRYPTO_ENV = "EDGEML_TELEMETRY_UNSAFE_CRYPTO"


def seal_telemetry_file(db_path: Path, home: Path) -> Path:
    """Encrypt the telemetry file at ``db_path`` from its creation on; the key file.

    A file that already exists holds its rows in clear and is refused.
    """
    if db_path.exists():
        raise StoreConfigError(
            f"{db_path} already exists in clear; seal a new telemetry file (before the node first starts)",
            hint="stop the node, move the file away, seal, start; or COPY FROM DATABASE into a sealed one",
        )
    if encryption_key(db_path) is not None:
        raise StoreConfigError(f"{db_path} is sealed already")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    return seal_with_new_key(db_path, home / "keys" / "telemetry.key")


def encryption_key(db_path: Path) -> str | None:
    """The key ``db_path`` is attached with (hex), or None when it is not sealed."""
    key = sealing_key(db_path, "telemetry file")
    return None if key is None else key.hex()


#: the wheel that ships DuckDB's httpfs extension, one release per DuckDB release
HTTPFS_WHEEL = "duckdb-extension-httpfs"


def packaged_httpfs() -> Path | None:
    """The httpfs extension the ``duckdb-extension-httpfs`` wheel installed for the running DuckDB
    (an extension loads only into the DuckDB release it was built for), or None."""
    import importlib.util

    found = importlib.util.find_spec(HTTPFS_WHEEL.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        path = Path(folder) / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
        if path.is_file():
            return path
    return None


def load_crypto(con: duckdb.DuckDBPyConnection, unsafe: bool | None = None) -> None:
    """Make ``con`` able to write encrypted files: OpenSSL through httpfs — the packaged one
    (:func:`packaged_httpfs`), else the one installed in DuckDB's extension folder — or the unsafe
    fallback when ``unsafe`` (None: as the environment says) allows it."""
    packaged = packaged_httpfs()
    try:
        if packaged is not None:
            con.execute(f"LOAD '{packaged.as_posix()}'")
        else:
            con.execute("LOAD httpfs")
    except duckdb.Error as exc:
        if unsafe if unsafe is not None else os.environ.get(UNSAFE_CRYPTO_ENV) == "1":
            con.execute("SET force_mbedtls_unsafe = true")
            return
        where = f"from {packaged}" if packaged is not None else "(no packaged one for this DuckDB either)"
        raise StoreConfigError(
            f"the telemetry file is sealed, and DuckDB {duckdb.__version__} cannot encrypt without its "
            f"httpfs extension (OpenSSL), which did not load {where}: {str(exc).splitlines()[0]}",
            hint=f"on the central node: pip install {HTTPFS_WHEEL}=={duckdb.__version__}, or once, "
            "online: python -c \"import duckdb; duckdb.execute('INSTALL httpfs')\"",
        ) from exc


class NotSealed(Unavailable):
    """A hipaa model's batch reached a node whose telemetry file is in clear: not stored (503)."""


def refuse_clear_hipaa(db_path: Path, model: str, version: int, compliance: str) -> None:
    """Raise NotSealed when a ``compliance: hipaa`` version's telemetry would be written to a clear file."""
    if compliance == "hipaa" and encryption_key(db_path) is None:  # its marker: a stat, hipaa batches only
        raise NotSealed(
            f"{model} v{version} is under compliance hipaa, and this node's telemetry file {db_path} is "
            "not encrypted at rest: the batch is not stored (the device keeps it and tries again)",
            hint="seal a new telemetry file (`edgeml central seal --config central.yaml`, "
            "docs/compliance.md) and restart the node",
        )
