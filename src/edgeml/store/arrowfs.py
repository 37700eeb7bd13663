"""A sealed local store as a read-only pyarrow filesystem, for Ray Data's file readers.

A ``store://`` file source hands Ray Data paths to read; in a sealed store (hipaa) the files on
disk are ciphertext, so the paths are keys and this filesystem opens each through the store, which
decrypts and authenticates it. Ray pickles the filesystem to its workers: the handler carries the
store's folder alone and each process finds the key as every opener of a sealed store does (the
``.sealed.json`` beside the folder). Objects are read whole into memory, as a landing file is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from edgeml.errors import ObjectNotFoundError
from edgeml.store.local import LocalStore

__all__ = ["sealed_filesystem"]


class _SealedStoreHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    def __init__(self, root: str) -> None:
        self.root = root
        self._store: LocalStore | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_SealedStoreHandler, (self.root,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SealedStoreHandler) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def store(self) -> LocalStore:
        if self._store is None:
            self._store = LocalStore(Path(self.root), create=False)
        return self._store

    def get_type_name(self) -> str:
        return "edgeml-sealed-store"

    def normalize_path(self, path: str) -> str:
        return path.strip("/")

    def _info(self, path: str) -> pafs.FileInfo:
        key = self.normalize_path(path)
        if not key:
            return pafs.FileInfo(path, pafs.FileType.Directory)
        try:
            return pafs.FileInfo(path, pafs.FileType.File, size=self.store.stat(key).size)
        except ObjectNotFoundError:
            if any(True for _ in self.store.list(key + "/")):
                return pafs.FileInfo(path, pafs.FileType.Directory)
            return pafs.FileInfo(path, pafs.FileType.NotFound)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(p) for p in paths]

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = self.normalize_path(selector.base_dir)
        prefix = f"{base}/" if base else ""
        infos, folders = [], set()
        for info in self.store.list(prefix):
            rest = info.key[len(prefix) :]
            if "/" in rest and not selector.recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            infos.append(pafs.FileInfo(info.key, pafs.FileType.File, size=info.size))
        infos += [pafs.FileInfo(f, pafs.FileType.Directory) for f in sorted(folders)]
        if not infos and base and not selector.allow_not_found:
            raise FileNotFoundError(f"{selector.base_dir} is not in {self.store.url}")
        return infos

    def _read(self, path: str) -> pa.BufferReader:
        try:
            return pa.BufferReader(self.store.get(self.normalize_path(path)))
        except ObjectNotFoundError as exc:
            raise FileNotFoundError(path) from exc

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self._read(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self._read(path)

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError("a file source reads the store; it does not write it")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


def sealed_filesystem(store: LocalStore) -> pafs.PyFileSystem:
    """A read-only pyarrow filesystem whose paths are ``store``'s keys, read decrypted."""
    return pafs.PyFileSystem(_SealedStoreHandler(str(store.root)))
