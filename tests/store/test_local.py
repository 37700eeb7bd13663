"""LocalStore specifics: atomic writes, concurrent readers, folders, URLs, file modes."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeml.errors import InvalidKeyError, ObjectNotFoundError, StoreConfigError, UserError
from edgeml.store import LocalStore, MemoryStore, open_store
from edgeml.store.base import CHUNK_SIZE, TEMP_PREFIX


class Boom(Exception):
    """The source of an upload failed."""


class ExplodingReader(io.RawIOBase):
    """Yields ``good`` bytes, then fails like a dropped network connection."""

    def __init__(self, good: int) -> None:
        self._left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            raise Boom("connection reset halfway through")
        n = min(len(buffer), self._left)
        buffer[:n] = b"n" * n
        self._left -= n
        return n


def all_entries(root: Path) -> list[str]:
    """Every file and folder under ``root``, hidden ones included, as relative paths."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


# --- atomic put ----------------------------------------------------------------------


def test_failed_put_keeps_previous_content_and_leaves_no_temp_file(store: LocalStore) -> None:
    store.put("models/m.onnx", b"version 1")
    before = all_entries(store.root)
    with pytest.raises(Boom):
        store.put("models/m.onnx", io.BufferedReader(ExplodingReader(CHUNK_SIZE + CHUNK_SIZE // 2)))
    assert store.get("models/m.onnx") == b"version 1"
    assert store.stat("models/m.onnx").sha256 == hashlib.sha256(b"version 1").hexdigest()
    assert all_entries(store.root) == before == ["models", "models/m.onnx"]
    assert os.listdir(store.root / "models") == ["m.onnx"]


def test_failed_put_of_new_key_leaves_nothing_behind(store: LocalStore) -> None:
    with pytest.raises(Boom):
        store.put("fresh/deep/key.bin", io.BufferedReader(ExplodingReader(1000)))
    assert not store.exists("fresh/deep/key.bin")
    assert all_entries(store.root) == [], "no temp file and no empty folder is left"
    # ... so the name the folder had is still free for an object.
    store.put("fresh", b"an object, not a folder")
    assert store.get("fresh") == b"an object, not a folder"


def test_listing_ignores_leftover_temp_files(store: LocalStore) -> None:
    """Temp files a crash left behind are never listed as objects."""
    store.put("a/real", b"1")
    (store.root / f"{TEMP_PREFIX}crashed").write_bytes(b"partial")
    (store.root / "a" / f"{TEMP_PREFIX}abc123").write_bytes(b"partial")
    (store.root / f"{TEMP_PREFIX}dir").mkdir()
    (store.root / f"{TEMP_PREFIX}dir" / "x").write_bytes(b"partial")
    assert store.keys() == ["a/real"]
    assert store.keys("a/") == ["a/real"]


# --- concurrency ---------------------------------------------------------------------


def test_concurrent_readers_see_whole_versions_while_a_key_is_overwritten(store: LocalStore) -> None:
    size = 2 * CHUNK_SIZE + 4097  # several write and read chunks: a torn file would show
    versions = {bytes([v]) * size for v in range(1, 31)}
    hashes = {hashlib.sha256(v).hexdigest() for v in versions}
    store.put("hot/key", bytes([0]) * size)
    hashes.add(hashlib.sha256(bytes([0]) * size).hexdigest())
    done = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not done.is_set():
            data = store.get("hot/key")
            reads[0] += 1
            if len(data) != size or data.count(data[:1]) != size:
                problems.append(f"torn read: {len(data)} bytes, first byte {data[:1]!r}")
            info = store.stat("hot/key")
            if info.size != size or info.sha256 not in hashes:
                problems.append(f"stat saw a partial object: {info}")

    def writer() -> None:
        try:
            for version in range(1, 31):
                store.put("hot/key", bytes([version]) * size)
        finally:
            done.set()

    threads = [threading.Thread(target=reader) for _ in range(4)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not problems, problems[:5]
    assert reads[0] > 0
    assert store.get("hot/key") == bytes([30]) * size
    assert all_entries(store.root) == ["hot", "hot/key"]


def test_concurrent_puts_and_deletes_in_one_folder_do_not_fail(store: LocalStore) -> None:
    """Deleting the last key prunes the folder; a put racing into that folder must still work."""
    errors: list[BaseException] = []
    deadline = time.monotonic() + 1.0

    def churn(name: str) -> None:
        while time.monotonic() < deadline:
            try:
                store.put(f"shared/sub/{name}", name.encode())
                store.delete(f"shared/sub/{name}")
            except BaseException as exc:  # collected: the assertion below shows them
                errors.append(exc)
                return

    threads = [threading.Thread(target=churn, args=(f"k{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert all_entries(store.root) == []


# --- keys vs folders -----------------------------------------------------------------


def test_key_that_is_a_folder_of_other_keys_is_invalid(store: LocalStore) -> None:
    store.put("lake/sensors/part-0", b"rows")
    with pytest.raises(InvalidKeyError, match=r"'lake/sensors' is already a folder of other keys") as info:
        store.put("lake/sensors", b"clash")
    assert info.value.exit_code == 2
    assert store.get("lake/sensors/part-0") == b"rows"
    assert store.keys() == ["lake/sensors/part-0"]


def test_key_that_passes_through_an_object_is_invalid(store: LocalStore) -> None:
    store.put("lake/sensors", b"an object")
    for key in ("lake/sensors/part-0", "lake/sensors/deeper/part-0"):
        with pytest.raises(InvalidKeyError, match=r"passes through an existing object") as info:
            store.put(key, b"clash")
        assert key in str(info.value)
        assert isinstance(info.value, UserError)
    assert store.get("lake/sensors") == b"an object"
    assert store.keys() == ["lake/sensors"]


def test_folders_and_paths_through_objects_are_not_objects(store: LocalStore) -> None:
    store.put("a/b", b"1")
    for key in ("a", "a/b/c"):
        assert not store.exists(key)
        with pytest.raises(ObjectNotFoundError):
            store.stream(key)
        with pytest.raises(ObjectNotFoundError):
            store.stat(key)
        store.delete(key)  # silent, and touches nothing
    assert store.get("a/b") == b"1"


def test_deleting_last_key_prunes_empty_folders(store: LocalStore) -> None:
    store.put("x/y/z/k1", b"1")
    store.put("x/y/other", b"2")
    store.delete("x/y/z/k1")
    assert all_entries(store.root) == ["x", "x/y", "x/y/other"]
    store.delete("x/y/other")
    assert all_entries(store.root) == []
    assert store.root.is_dir(), "the store root itself stays"
    store.put("x", b"the name is free again")
    assert store.keys() == ["x"]


# --- opening -------------------------------------------------------------------------


def test_open_store_file_url(tmp_path: Path) -> None:
    target = tmp_path / "with space" / "store"
    store = open_store(target.as_uri())  # file:///.../with%20space/store
    assert isinstance(store, LocalStore)
    assert store.root == target
    assert target.is_dir()
    assert store.url == target.as_uri()
    store.put("k", b"v")
    assert (target / "k").read_bytes() == b"v"
    again = open_store(f"file://localhost{target}")
    assert isinstance(again, LocalStore)
    assert again.get("k") == b"v"


def test_open_store_bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = open_store(str(tmp_path / "abs"))
    assert isinstance(absolute, LocalStore)
    assert absolute.root == tmp_path / "abs"
    monkeypatch.chdir(tmp_path)
    relative = open_store("rel/store")
    assert isinstance(relative, LocalStore)
    assert relative.root == tmp_path / "rel" / "store"


def test_open_store_memory_url() -> None:
    store = open_store("memory://scratch")
    assert isinstance(store, MemoryStore)
    assert store.url == "memory://scratch"


@pytest.mark.parametrize("url", ["ftp://host/store", "gs://bucket/prefix", "http://example.com/store"])
def test_open_store_unknown_scheme(url: str) -> None:
    with pytest.raises(StoreConfigError, match="unknown scheme") as info:
        open_store(url)
    assert url in str(info.value)
    assert info.value.hint is not None
    assert "file:///" in info.value.hint
    assert info.value.exit_code == 2


def test_open_store_remote_file_url_is_refused() -> None:
    with pytest.raises(StoreConfigError, match="must be local"):
        open_store("file://fileserver/share/store")


def test_store_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreConfigError, match="cannot create store folder"):
        LocalStore(blocker / "store")
    with pytest.raises(StoreConfigError, match="does not exist"):
        LocalStore(tmp_path / "missing", create=False)


# --- file modes ----------------------------------------------------------------------


@pytest.fixture
def umask() -> Iterator[None]:
    """A restrictive umask, so a mode of 0644 can only come from the store itself."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask")
def test_objects_are_written_with_mode_0644(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file")
    src.chmod(0o600)
    store.put("modes/bytes", b"x")
    store.put("modes/path", src)
    store.put("modes/bytes", b"overwritten")
    for key in ("modes/bytes", "modes/path"):
        mode = stat.S_IMODE((store.root / key).stat().st_mode)
        assert mode == 0o644, f"{key}: {mode:o}"
