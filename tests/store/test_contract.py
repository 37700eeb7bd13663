"""One contract, every backend: LocalStore, MemoryStore and S3Store (real S3-protocol server).

Each test gets a fresh store: a new folder, a new in-memory store, or a unique key prefix
in the shared bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeml.errors import InvalidKeyError, ObjectExistsError, ObjectNotFoundError, StoreError, UserError
from edgeml.store import LocalStore, MemoryStore, ObjectStore, check_key
from edgeml.store.base import CHUNK_SIZE, TEMP_PREFIX

MiB = 1024 * 1024

BACKENDS = ["local", "local-sealed", "memory", pytest.param("s3", marks=pytest.mark.integration)]

FIXTURE_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ObjectStore:
    if kind == "local":
        return LocalStore(tmp_path / "store")
    if kind == "local-sealed":  # encrypted at rest: the same contract, on ciphertext
        from edgeml.store.sealed import enable_sealing

        enable_sealing(tmp_path / "store", tmp_path / "home")
        return LocalStore(tmp_path / "store")
    if kind == "memory":
        return MemoryStore("contract")
    from edgeml.store.s3 import S3Store

    server = request.getfixturevalue("s3_server")
    return S3Store(server.bucket, server.settings(), prefix=f"contract/{uuid.uuid4().hex}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return make_store(request.param, tmp_path, request)


@pytest.fixture(params=["local", "local-sealed", "memory"])
def fast_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The backends cheap enough for property tests."""
    return make_store(request.param, tmp_path, request)


class TrickleReader(io.RawIOBase):
    """A non-seekable stream that hands out at most ``step`` bytes per read, like a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


# --- writing and reading whole objects -------------------------------------------------


def test_put_bytes_then_get(store: ObjectStore) -> None:
    data = payload(5000)
    info = store.put("data/blob.bin", data)
    assert store.get("data/blob.bin") == data
    assert (info.key, info.size, info.sha256) == ("data/blob.bin", len(data), sha256(data))


def test_put_empty_object(store: ObjectStore) -> None:
    info = store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.stat("empty").size == 0
    assert info.sha256 == sha256(b"")


def test_put_binary_stream_and_leave_it_open(store: ObjectStore) -> None:
    data = payload(CHUNK_SIZE * 2 + 12345, seed=1)  # several chunks, last one partial
    stream = io.BytesIO(data)
    info = store.put("streams/seekable.bin", stream)
    assert not stream.closed, "put must not close a stream the caller owns"
    assert store.get("streams/seekable.bin") == data
    assert info.sha256 == sha256(data)


def test_put_non_seekable_stream_with_short_reads(store: ObjectStore) -> None:
    data = payload(300_000, seed=2)
    reader = io.BufferedReader(TrickleReader(data, step=4096))
    info = store.put("streams/trickle.bin", reader)
    assert store.get("streams/trickle.bin") == data
    assert info.size == len(data)


def test_put_path(store: ObjectStore, tmp_path: Path) -> None:
    data = payload(70_000, seed=3)
    src = tmp_path / "source.bin"
    src.write_bytes(data)
    info = store.put("from/file.bin", src)
    assert store.get("from/file.bin") == data
    assert info.sha256 == sha256(data)
    assert src.read_bytes() == data, "the source file is left as it was"


def test_stat_reports_size_and_sha256(store: ObjectStore) -> None:
    data = payload(123_457, seed=4)
    put_info = store.put("stat/me", data)
    info = store.stat("stat/me")
    assert info.key == "stat/me"
    assert info.size == len(data)
    assert info.sha256 == sha256(data) == put_info.sha256
    assert info.etag


def test_overwrite_replaces_content(store: ObjectStore) -> None:
    store.put("over/write", b"first version, rather long")
    store.put("over/write", b"second")
    assert store.get("over/write") == b"second"
    info = store.stat("over/write")
    assert (info.size, info.sha256) == (6, sha256(b"second"))
    assert store.keys("over/") == ["over/write"]


def test_create_writes_only_where_nothing_is(store: ObjectStore) -> None:
    info = store.create("made/once", b"first", content_type="application/json")
    assert (info.size, info.sha256) == (5, sha256(b"first"))
    with pytest.raises(ObjectExistsError) as taken:
        store.create("made/once", b"second")
    assert taken.value.key == "made/once"
    assert store.get("made/once") == b"first"
    assert store.stat("made/once").sha256 == sha256(b"first")
    store.put("made/once", b"third")  # put still overwrites
    assert store.get("made/once") == b"third"
    assert store.keys("made/") == ["made/once"]  # nothing left behind by the refused create


def test_of_racing_creates_exactly_one_wins(store: ObjectStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(n: int) -> int | None:
        try:
            store.create("race/key", f"writer {n}".encode())
        except ObjectExistsError:
            return None
        return n

    with ThreadPoolExecutor(8) as pool:
        winners = [n for n in pool.map(attempt, range(16)) if n is not None]
    assert len(winners) == 1
    assert store.get("race/key") == f"writer {winners[0]}".encode()
    assert store.keys("race/") == ["race/key"]


# --- ranged streaming ----------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * 40  # 10240 bytes, every position distinguishable mod 256
RANGE_CASES = [
    (0, None, CHUNK_SIZE),
    (0, None, 1000),
    (100, None, 7),
    (100, 50, 7),
    (100, 50, 50),
    (0, 1, 1),
    (0, 0, 10),
    (5000, 0, 10),
    (10239, None, 4096),
    (10239, 10, 4096),
    (10230, 100, 3),  # length runs past the end: the tail
    (0, 10**9, 4096),
    (10240, None, 10),  # offset at the end
    (10240, 5, 10),
    (20000, None, 10),  # offset past the end
    (20000, 5, 10),
]


@pytest.mark.parametrize(("offset", "length", "chunk_size"), RANGE_CASES)
def test_stream_range_equals_slicing(
    store: ObjectStore, offset: int, length: int | None, chunk_size: int
) -> None:
    store.put("ranges/data", RANGE_DATA)
    chunks = list(store.stream("ranges/data", offset=offset, length=length, chunk_size=chunk_size))
    end = None if length is None else offset + length
    assert b"".join(chunks) == RANGE_DATA[offset:end]
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)


@pytest.mark.parametrize(("offset", "length"), [(0, None), (0, 5), (0, 0), (1, None), (3, 2)])
def test_stream_of_empty_object_yields_nothing(store: ObjectStore, offset: int, length: int | None) -> None:
    store.put("ranges/empty", b"")
    assert list(store.stream("ranges/empty", offset=offset, length=length)) == []


@pytest.mark.parametrize("kwargs", [{"offset": -1}, {"length": -1}, {"chunk_size": 0}])
def test_stream_rejects_bad_arguments(store: ObjectStore, kwargs: dict[str, int]) -> None:
    store.put("ranges/x", b"abc")
    with pytest.raises(ValueError, match=r"offset|length|chunk_size"):
        store.stream("ranges/x", **kwargs)


@FIXTURE_SETTINGS
@given(
    data=st.binary(max_size=3000),
    offset=st.integers(min_value=0, max_value=3500),
    length=st.none() | st.integers(min_value=0, max_value=3500),
    chunk_size=st.integers(min_value=1, max_value=1500),
)
def test_stream_range_property(
    fast_store: ObjectStore, data: bytes, offset: int, length: int | None, chunk_size: int
) -> None:
    fast_store.put("prop/data", data)
    chunks = list(fast_store.stream("prop/data", offset=offset, length=length, chunk_size=chunk_size))
    end = None if length is None else offset + length
    assert b"".join(chunks) == data[offset:end]
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)


# --- missing keys --------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "length"), [(0, None), (10, None), (0, 5), (0, 0)])
def test_stream_of_missing_key_raises_at_the_call(
    store: ObjectStore, offset: int, length: int | None
) -> None:
    store.put("present", b"x")
    with pytest.raises(ObjectNotFoundError) as info:
        store.stream("absent/key", offset=offset, length=length)  # no iteration
    assert info.value.key == "absent/key"
    assert "absent/key" in str(info.value)


def test_get_and_stat_of_missing_key_raise(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="nothing/here"):
        store.get("nothing/here")
    with pytest.raises(ObjectNotFoundError, match="nothing/here"):
        store.stat("nothing/here")


def test_exists(store: ObjectStore) -> None:
    assert not store.exists("ex/a")
    store.put("ex/a", b"1")
    assert store.exists("ex/a")
    assert not store.exists("ex")  # a prefix of a key is not an object
    assert not store.exists("ex/a/b")
    store.delete("ex/a")
    assert not store.exists("ex/a")


# --- listing -------------------------------------------------------------------------

LIST_KEYS = [
    "b/z",
    "a/bc",
    "a/b/d",
    "a/b/c",
    "ab",
    "a/a",
    "A/x",
    "a/bd/x",
    "a/é",
    "a/z",
    "a/b0",
]


@pytest.fixture
def listed(store: ObjectStore) -> ObjectStore:
    for i, key in enumerate(LIST_KEYS):
        store.put(key, b"x" * (i + 1))
    return store


@pytest.mark.parametrize(
    "prefix", ["", "a", "a/", "a/b", "a/b/", "a/bc", "a/é", "A", "b/", "zzz", "a/b/c", "a/b/c/"]
)
def test_list_is_sorted_and_plain_string_prefix(listed: ObjectStore, prefix: str) -> None:
    expected = sorted(k for k in LIST_KEYS if k.startswith(prefix))
    assert listed.keys(prefix) == expected


def test_list_prefix_matches_across_segments(listed: ObjectStore) -> None:
    # "a/b" is a plain string prefix, not a folder: it matches "a/b/c" and "a/bc" alike.
    assert listed.keys("a/b") == ["a/b/c", "a/b/d", "a/b0", "a/bc", "a/bd/x"]


def test_list_reports_sizes(listed: ObjectStore) -> None:
    sizes = {info.key: info.size for info in listed.list()}
    assert sizes == {key: i + 1 for i, key in enumerate(LIST_KEYS)}


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../a", "a/../b", "a\\b"])
def test_list_rejects_bad_prefix(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.keys(prefix)


# --- deleting ------------------------------------------------------------------------


def test_delete_removes_and_missing_is_silent(store: ObjectStore) -> None:
    store.put("del/one", b"1")
    store.put("del/two", b"2")
    store.delete("del/one")
    assert not store.exists("del/one")
    with pytest.raises(ObjectNotFoundError):
        store.get("del/one")
    assert store.keys() == ["del/two"]
    store.delete("del/one")  # again: silent
    store.delete("never/existed")
    assert store.get("del/two") == b"2"


# --- big objects ---------------------------------------------------------------------


@pytest.mark.slow
def test_large_object_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    # Past the S3 store's 16 MiB part size and in-memory spool: a 2-part multipart upload
    # spooled through disk. 12 MiB would still go up in a single PUT.
    data = os.urandom(17 * MiB + 123)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    info = store.put("big/object.bin", src)
    assert info.size == len(data)
    assert info.sha256 == sha256(data)
    stat = store.stat("big/object.bin")
    assert (stat.size, stat.sha256) == (len(data), sha256(data))
    if store.backend == "s3":
        assert stat.etag is not None
        assert stat.etag.strip('"').endswith("-2"), f"expected a 2-part multipart ETag, got {stat.etag}"
    dest = tmp_path / "back.bin"
    store.download("big/object.bin", dest)
    assert dest.read_bytes() == data
    tail = b"".join(store.stream("big/object.bin", offset=len(data) - 1000))
    assert tail == data[-1000:]


# --- download ------------------------------------------------------------------------


def test_download_writes_file_atomically(store: ObjectStore, tmp_path: Path) -> None:
    data = payload(CHUNK_SIZE + 1, seed=5)
    store.put("dl/model.onnx", data)
    dest = tmp_path / "out" / "nested" / "model.onnx"  # parent folders are created
    info = store.download("dl/model.onnx", dest)
    assert dest.read_bytes() == data
    assert info.sha256 == sha256(data)
    assert sorted(os.listdir(dest.parent)) == ["model.onnx"], "no temporary file is left"


def test_download_replaces_existing_file(store: ObjectStore, tmp_path: Path) -> None:
    store.put("dl/v2", b"new content")
    dest = tmp_path / "file"
    dest.write_bytes(b"old content that is longer")
    store.download("dl/v2", dest)
    assert dest.read_bytes() == b"new content"


def test_download_of_missing_key_leaves_destination_alone(store: ObjectStore, tmp_path: Path) -> None:
    dest = tmp_path / "dest" / "keep.txt"
    dest.parent.mkdir()
    dest.write_bytes(b"precious")
    with pytest.raises(ObjectNotFoundError):
        store.download("dl/missing", dest)
    assert dest.read_bytes() == b"precious"
    assert os.listdir(dest.parent) == ["keep.txt"]


@pytest.mark.integration
def test_download_detects_content_that_does_not_match_its_sha256(s3_server: Any, tmp_path: Path) -> None:
    """An object whose recorded sha256 is wrong (written by another tool) is refused."""
    from minio import Minio

    from edgeml.store.s3 import S3Store

    store = S3Store(s3_server.bucket, s3_server.settings(), prefix=f"contract/{uuid.uuid4().hex}")
    client = Minio(
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region="us-east-1",
    )
    data = b"the real content"
    client.put_object(
        s3_server.bucket,
        store.prefix + "dl/tampered",
        io.BytesIO(data),
        len(data),
        metadata={"sha256": sha256(b"something else")},
    )
    dest = tmp_path / "dest" / "tampered"
    with pytest.raises(StoreError, match="sha256") as info:
        store.download("dl/tampered", dest)
    assert not isinstance(info.value, ObjectNotFoundError)
    assert not dest.exists()
    assert os.listdir(dest.parent) == [], "the temporary file is removed"


# --- keys ----------------------------------------------------------------------------

UNICODE_KEYS = ["lake/température/données.csv", "日本語/データ.bin", "emoji/🙂 space.txt", "ß/Ω/ﬁ"]


def test_unicode_keys_round_trip(store: ObjectStore) -> None:
    for i, key in enumerate(UNICODE_KEYS):
        store.put(key, key.encode() * (i + 1))
    for i, key in enumerate(UNICODE_KEYS):
        assert store.get(key) == key.encode() * (i + 1)
        assert store.stat(key).sha256 == sha256(key.encode() * (i + 1))
    assert store.keys() == sorted(UNICODE_KEYS)
    assert store.keys("lake/temp") == ["lake/température/données.csv"]
    store.delete("lake/température/données.csv")
    assert not store.exists("lake/température/données.csv")


INVALID_KEYS = [
    "",
    "/a",
    "a/",
    "a//b",
    "a/../b",
    "..",
    "./a",
    "a/.",
    "a\\b",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "a\udc80b",  # a lone surrogate: not encodable as UTF-8
    f"{TEMP_PREFIX}x",
    f"a/{TEMP_PREFIX}123/b",
    "x" * 256,  # one segment longer than a file name may be
    "a/" * 512 + "b",  # longer than 1024 bytes
]


def _every_method(store: ObjectStore, key: str, tmp_path: Path) -> dict[str, Callable[[], object]]:
    return {
        "put": lambda: store.put(key, b"data"),
        "put-stream": lambda: store.put(key, io.BytesIO(b"data")),
        "get": lambda: store.get(key),
        "stream": lambda: store.stream(key),
        "stat": lambda: store.stat(key),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "download": lambda: store.download(key, tmp_path / "dl"),
    }


@pytest.mark.parametrize("key", INVALID_KEYS, ids=repr)
def test_invalid_key_is_rejected_by_every_method(store: ObjectStore, key: str, tmp_path: Path) -> None:
    for name, call in _every_method(store, key, tmp_path).items():
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert isinstance(info.value, UserError), name
        assert info.value.exit_code == 2, name
    assert store.keys() == []
    assert not (tmp_path / "dl").exists()


def test_check_key_accepts_and_returns_good_keys() -> None:
    for key in ["a", "a/b", "a.b/c-d_e", "...", "a/.hidden", "x" * 255, "é" * 127, *UNICODE_KEYS]:
        assert check_key(key) == key


SEGMENT = st.text(
    alphabet=st.one_of(
        st.sampled_from("./\\\x00\n -_~é日🙂"),
        st.characters(codec="utf-8"),
    ),
    min_size=0,
    max_size=20,
)
KEYS = st.one_of(
    st.lists(SEGMENT, min_size=1, max_size=5).map("/".join),
    st.text(max_size=40),
)


@FIXTURE_SETTINGS
@given(key=KEYS)
@example(key="x" * 255)
@example(key="é" * 127)
@example(key="a/.../b")
@example(key=".edgeml-tmp")  # not the reserved prefix itself
def test_every_key_check_key_accepts_round_trips_locally(tmp_path: Path, key: str) -> None:
    try:
        check_key(key)
    except InvalidKeyError:
        return
    store = LocalStore(tmp_path / uuid.uuid4().hex)
    data = key.encode("utf-8")
    store.put(key, data)
    assert store.get(key) == data
    assert store.keys() == [key]
    files = [Path(d, f) for d, _, names in os.walk(store.root) for f in names]
    assert len(files) == 1
    assert files[0].resolve().is_relative_to(store.root)
    assert files[0].relative_to(store.root).as_posix() == key
    store.delete(key)
    assert list(store.root.iterdir()) == []
