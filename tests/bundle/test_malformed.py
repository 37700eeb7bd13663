"""Every malformed input is a rejection, never a crash (property-based).

Arbitrary JSON values go into every field of signature documents, channel pointers, manifests
and key rings. Pointers and manifests are re-signed with the genuine key after the change (what
a buggy or fooled publisher could produce), so the checks behind the signature are reached too.
The library raises :class:`BundleRejected` or returns a valid document; `bundle verify` and
`rollout verify` exit 3 with a message (2 for a key ring, which is the operator's own setting),
never 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgeml.bundle.build import publish_bundle
from edgeml.bundle.channels import ChannelPointer, pointer_key, verify_pointer
from edgeml.bundle.keys import KeyRing, Signer, canonical_json, init_keys, load_signer
from edgeml.bundle.manifest import Manifest, manifest_key
from edgeml.bundle.rollout import publish as publish_channel
from edgeml.bundle.verify import fetch_bundle, verify_manifest
from edgeml.cli import main
from edgeml.errors import BundleRejected, UserError
from edgeml.store.local import LocalStore

from .conftest import make_manifest, write_model

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI_FUZZ = settings(FUZZ, max_examples=25)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["../../x", "/etc/passwd", "", "ed25519", "0" * 64, "x86-64-generic", "pump"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

MANIFEST_KEY = manifest_key("pump", 1, "x86-64-generic")
POINTER_KEY = pointer_key("pump", "stable")


T = TypeVar("T")


def attempt(act: Callable[[], T]) -> T | BundleRejected:
    """What ``act`` returns, or the rejection it raised (any other exception fails the test)."""
    try:
        return act()
    except BundleRejected as exc:
        return exc


def replaced(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """``document`` with the field at ``path`` set to ``value`` (or deleted, for the marker)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = list(document) if isinstance(document, list) else dict(document)
    if value is _DELETE and not rest:
        del copy[head]
    else:
        copy[head] = replaced(copy[head], rest, value)
    return copy


_DELETE = object()
values_or_delete = json_values | st.just(_DELETE)


def paths(document: Any, prefix: tuple[str | int, ...] = (), depth: int = 2) -> list[tuple[str | int, ...]]:
    """Every field path of ``document`` down to ``depth`` levels (lists: their first item)."""
    found = [prefix] if prefix else []
    if depth == 0:
        return found
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key), depth - 1)
    elif isinstance(document, list) and document:
        found += paths(document[0], (*prefix, 0), depth - 1)
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Signer, Path]:
    """A publisher home with pump v1 built and on stable, and a key-ring folder."""
    root = tmp_path_factory.mktemp("malformed")
    home = root / "home"
    init_keys(home)
    signer = load_signer(home)
    store = LocalStore(home / "store")
    folder = root / "build"
    publish_bundle(store, signer, make_manifest(write_model(folder, 1), 1), folder)
    publish_channel(store, signer, "pump", 1, "stable")
    return store, signer, home


def signed(store: LocalStore, signer: Signer, key: str, document: Any) -> None:
    try:
        data = canonical_json(document)
    except ValueError:  # only NaN-like values fail, and the strategy makes none
        raise AssertionError("unreachable") from None
    store.put(key + ".sig", signer.sign(data))
    store.put(key, data)


class Restore:
    """Put the genuine objects back after each example."""

    def __init__(self, store: LocalStore, *keys: str) -> None:
        self.store = store
        self.saved = {k: store.get(k) for key in keys for k in (key, key + ".sig")}

    def __call__(self) -> None:
        for key, data in self.saved.items():
            self.store.put(key, data)


# --- signature documents --------------------------------------------------------------------


@FUZZ
@given(field=st.sampled_from(["algorithm", "key_id", "signature"]), value=values_or_delete)
def test_any_value_in_any_signature_field_is_a_rejection(
    world: tuple[LocalStore, Signer, Path], field: str, value: Any
) -> None:
    store, signer, _ = world
    data = store.get(MANIFEST_KEY)
    genuine = json.loads(store.get(MANIFEST_KEY + ".sig"))
    # Hypothesis draws literals found in the code ("ed25519", a key id): a field given its own
    # value back is the genuine document, not a malformed one
    assume(genuine.get(field) != value)
    document = replaced(genuine, (field,), value)
    with pytest.raises(BundleRejected) as caught:
        signer.ring().verify(data, json.dumps(document).encode())
    assert caught.value.reason in {"bad-signature", "unknown-key"}


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_as_a_signature_document_are_a_rejection(
    world: tuple[LocalStore, Signer, Path], raw: bytes
) -> None:
    store, signer, _ = world
    with pytest.raises(BundleRejected):
        signer.ring().verify(store.get(MANIFEST_KEY), raw)


def test_a_deeply_nested_or_huge_signature_document_is_a_rejection(
    world: tuple[LocalStore, Signer, Path],
) -> None:
    store, signer, _ = world
    for raw in (b"[" * 100_000, b'{"key_id": "' + b"a" * 100_000 + b'"}'):
        with pytest.raises(BundleRejected, match="bad-signature"):
            signer.ring().verify(store.get(MANIFEST_KEY), raw)


# --- pointers and manifests, signed after the change ---------------------------------------


def _pointer_paths(store: LocalStore) -> list[tuple[str | int, ...]]:
    return paths(json.loads(store.get(POINTER_KEY)), depth=3)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_value_in_any_pointer_field_is_rejected_or_valid(
    world: tuple[LocalStore, Signer, Path], data: st.DataObject
) -> None:
    store, signer, _ = world
    restore = Restore(store, POINTER_KEY)
    path = data.draw(st.sampled_from(_pointer_paths(store)), label="path")
    value = data.draw(values_or_delete, label="value")
    try:
        signed(store, signer, POINTER_KEY, replaced(json.loads(store.get(POINTER_KEY)), path, value))
        data, sig = store.get(POINTER_KEY), store.get(POINTER_KEY + ".sig")
        pointer = attempt(lambda: verify_pointer(data, sig, signer.ring(), model="pump", channel="stable"))
        if isinstance(pointer, BundleRejected):
            assert pointer.message
            return
        assert isinstance(pointer, ChannelPointer)  # a harmless change (groups, created, ...)
        assert (pointer.model, pointer.channel) == ("pump", "stable")
    finally:
        restore()


def _manifest_paths(store: LocalStore) -> list[tuple[str | int, ...]]:
    return paths(json.loads(store.get(MANIFEST_KEY)), depth=3)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_any_value_in_any_manifest_field_is_rejected_or_valid(
    world: tuple[LocalStore, Signer, Path], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store, signer, _ = world
    restore = Restore(store, MANIFEST_KEY)
    path = data.draw(st.sampled_from(_manifest_paths(store)), label="path")
    value = data.draw(values_or_delete, label="value")
    staging = tmp_path_factory.mktemp("staging")
    try:
        signed(store, signer, MANIFEST_KEY, replaced(json.loads(store.get(MANIFEST_KEY)), path, value))
        staged = attempt(lambda: fetch_bundle(store, MANIFEST_KEY, signer.ring(), staging))
        if isinstance(staged, BundleRejected):
            assert staged.message
            assert not list(staging.glob(".stage-*"))
            return
        assert isinstance(staged.manifest, Manifest)
        assert (staged.manifest.model, staged.manifest.version) == ("pump", 1)
    finally:
        restore()


@pytest.mark.parametrize("model", ["../../x", "/abs", "Pump", "a/b", ""])
def test_a_signed_manifest_naming_a_path_as_its_model_is_rejected(
    world: tuple[LocalStore, Signer, Path], tmp_path: Path, model: str
) -> None:
    store, signer, _ = world
    restore = Restore(store, MANIFEST_KEY)
    try:
        document = json.loads(store.get(MANIFEST_KEY)) | {"model": model}
        signed(store, signer, MANIFEST_KEY, document)
        with pytest.raises(BundleRejected, match=r"field model") as caught:
            fetch_bundle(store, MANIFEST_KEY, signer.ring(), tmp_path / "staging")
        assert caught.value.reason == "malformed"
        data = store.get(MANIFEST_KEY)
        with pytest.raises(BundleRejected):
            verify_manifest(data, store.get(MANIFEST_KEY + ".sig"), signer.ring())
    finally:
        restore()


# --- the CLI: exit 3 with a message, never 1 -------------------------------------------------


def run(*argv: str) -> tuple[int, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        code = main(list(argv))
    return code, err.getvalue() + out.getvalue()


@pytest.fixture
def cli_world(
    world: tuple[LocalStore, Signer, Path], monkeypatch: pytest.MonkeyPatch
) -> tuple[LocalStore, Signer, Path]:
    import os

    for name in list(os.environ):
        if name.startswith("EDGEML_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDGEML_HOME", str(world[2]))
    return world


@pytest.mark.slow
@CLI_FUZZ
@given(data=st.data())
def test_bundle_verify_exits_3_for_any_malformed_signature_or_manifest(
    cli_world: tuple[LocalStore, Signer, Path], capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    store, signer, _ = cli_world
    restore = Restore(store, MANIFEST_KEY)
    target = data.draw(st.sampled_from(["signature", "manifest"]), label="target")
    value = data.draw(values_or_delete, label="value")
    try:
        if target == "signature":
            field = data.draw(st.sampled_from(["algorithm", "key_id", "signature"]), label="field")
            sig = replaced(json.loads(store.get(MANIFEST_KEY + ".sig")), (field,), value)
            store.put(MANIFEST_KEY + ".sig", json.dumps(sig).encode())
        else:
            path = data.draw(st.sampled_from(_manifest_paths(store)), label="path")
            signed(store, signer, MANIFEST_KEY, replaced(json.loads(store.get(MANIFEST_KEY)), path, value))
        code, said = run("bundle", "verify", "pump/1/x86-64-generic")
        capsys.readouterr()
        assert code in (0, 3), said
        assert "internal error" not in said
        if code == 3:
            assert "error:" in said
    finally:
        restore()


@pytest.mark.slow
@CLI_FUZZ
@given(data=st.data())
def test_rollout_verify_exits_3_for_any_malformed_pointer(
    cli_world: tuple[LocalStore, Signer, Path], capsys: pytest.CaptureFixture[str], data: st.DataObject
) -> None:
    store, signer, _ = cli_world
    restore = Restore(store, POINTER_KEY)
    path = data.draw(st.sampled_from(_pointer_paths(store)), label="path")
    value = data.draw(values_or_delete, label="value")
    try:
        signed(store, signer, POINTER_KEY, replaced(json.loads(store.get(POINTER_KEY)), path, value))
        code, said = run("rollout", "verify", "pump")
        capsys.readouterr()
        assert code in (0, 3), said
        assert "internal error" not in said
        if code == 3:
            assert "rejected" in said
    finally:
        restore()


# --- key rings ------------------------------------------------------------------------------


@FUZZ
@given(
    content=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    name=st.sampled_from(["0123456789abcdef", "key", "../x"]),
)
def test_any_content_in_a_key_ring_file_is_a_user_error_naming_it(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, name: str
) -> None:
    folder = tmp_path_factory.mktemp("ring")
    (folder / f"{Path(name).name}.pub").write_bytes(content)
    with pytest.raises(UserError, match=r"\.pub"):
        KeyRing.from_dir(folder)


def test_bundle_verify_with_a_broken_key_ring_exits_2_naming_the_file(
    cli_world: tuple[LocalStore, Signer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ring = tmp_path / "ring"
    ring.mkdir()
    (ring / "0123456789abcdef.pub").write_text(json.dumps({"key": [1, 2]}))
    code, said = run("bundle", "verify", "pump/1/x86-64-generic", "--keyring", str(ring))
    capsys.readouterr()
    assert code == 2
    assert "0123456789abcdef.pub" in said
