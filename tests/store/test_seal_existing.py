"""``edgeml store seal`` on a store already holding objects in clear: each is sealed in place,
atomically; an interrupted run is finished by the next; a second run changes nothing; a wrong or
missing key is a clear error, not a traceback; every seal is on the audit trail."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgeml.audit import AuditLog
from edgeml.cli import main
from edgeml.errors import StoreConfigError, StoreError
from edgeml.store.base import TEMP_PREFIX
from edgeml.store.local import LocalStore
from edgeml.store.seal_existing import seal_existing
from edgeml.store.sealed import CHUNK, MAGIC, enable_sealing

#: a few objects, one over two chunks, one empty, in nested folders
OBJECTS = {
    "lake/ward/2026-01-02/part-0.parquet": b"PAR1 rows of patient 0042 " * 6000,
    "lake/ward/2026-01-03/part-1.parquet": b"PAR1 rows of patient 0043",
    "catalog/ward/latest.json": b'{"snapshot": "s1"}',
    "notes/empty": b"",
    **{f"landing/ward/{n:02d}.csv": f"ts,patient\n{n},badge-{n}\n".encode() for n in range(12)},
}


def _clear_store(home: Path) -> LocalStore:
    store = LocalStore(home / "store")
    for key, data in OBJECTS.items():
        store.put(key, data)
    return store


def _on_disk(store: LocalStore) -> dict[str, bytes]:
    return {
        p.relative_to(store.root).as_posix(): p.read_bytes() for p in store.root.rglob("*") if p.is_file()
    }


def test_cli_seals_every_clear_object_in_place_and_a_second_run_changes_nothing(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _clear_store(clean_env)
    mtimes = {k: (store.root / k).stat().st_mtime_ns for k in OBJECTS}
    assert main(["store", "seal"]) == 0
    out = capsys.readouterr().out
    assert f"{len(OBJECTS)} object(s) sealed in place, 0 already sealed" in out
    assert str(clean_env / "keys" / "store.key") in out
    sealed = LocalStore(clean_env / "store")
    disk = _on_disk(sealed)
    for key, data in OBJECTS.items():
        assert disk[key].startswith(MAGIC), key
        assert b"patient" not in disk[key], key
        assert b"badge-" not in disk[key], key
        assert sealed.get(key) == data  # the same bytes, read through the key
        assert sealed.stat(key).sha256 == hashlib.sha256(data).hexdigest()
        assert (sealed.root / key).stat().st_mtime_ns == mtimes[key]  # retention reads it
    assert len(OBJECTS["lake/ward/2026-01-02/part-0.parquet"]) > 2 * CHUNK
    assert not list(sealed.root.rglob(f"{TEMP_PREFIX}*"))
    (entry,) = [e for e in AuditLog(sealed).entries() if e.action == "store.seal"]
    assert entry.subject == sealed.url
    assert {k: entry.after[k] for k in ("sealed", "already")} == {"sealed": len(OBJECTS), "already": 0}

    before = _on_disk(sealed)
    assert main(["store", "seal"]) == 0  # idempotent: nothing rewritten, nothing recorded
    assert "0 object(s) sealed in place" in capsys.readouterr().out
    assert _on_disk(sealed) == before
    assert len([e for e in AuditLog(sealed).entries() if e.action == "store.seal"]) == 1


def test_an_interrupted_seal_leaves_every_object_whole_and_the_next_run_finishes(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _clear_store(clean_env)
    enable_sealing(store.root, clean_env)
    steps = seal_existing(LocalStore(store.root))
    done = [next(steps) for _ in range(5)]  # stopped after five objects, as a Ctrl-C would
    steps.close()
    assert [s.outcome for s in done] == ["sealed"] * 5
    # and a crash in the middle of the sixth: its sealed copy half written beside it
    sixth = store.root / "landing" / "ward" / "04.csv"
    (sixth.parent / f"{TEMP_PREFIX}seal-0123456789abcdef").write_bytes(MAGIC + b"\x00" * 10)
    disk = _on_disk(store)
    clear = {k for k in OBJECTS if not disk[k].startswith(MAGIC)}
    assert len(clear) == len(OBJECTS) - 5  # the rest still clear and whole
    assert all(disk[k] == OBJECTS[k] for k in clear)
    opened = LocalStore(store.root)  # readers meanwhile: sealed ones served, clear ones refused
    assert opened.get(done[0].key) == OBJECTS[done[0].key]
    with pytest.raises(StoreError, match="is not sealed"):
        opened.get(sorted(clear)[0])

    assert main(["store", "seal"]) == 0
    assert f"{len(clear)} object(s) sealed in place, 5 already sealed" in capsys.readouterr().out
    sealed = LocalStore(store.root)
    assert {k: sealed.get(k) for k in OBJECTS} == OBJECTS
    assert not list(sealed.root.rglob(f"{TEMP_PREFIX}*"))


def test_a_wrong_or_missing_key_is_a_clear_error_and_nothing_changes(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _clear_store(clean_env)
    key = enable_sealing(store.root, clean_env)
    steps = seal_existing(LocalStore(store.root))
    next(steps)
    steps.close()
    good = key.read_bytes()
    key.write_bytes(os.urandom(32))  # a backup of another store's key put back by mistake
    before = _on_disk(store)
    assert main(["store", "seal"]) == 2
    err = capsys.readouterr().err
    assert "does not open with the store's key" in err
    assert "Traceback" not in err
    assert _on_disk(store) == before
    with pytest.raises(StoreConfigError, match="does not open with the store's key"):
        list(seal_existing(LocalStore(store.root)))

    key.unlink()  # the key lost
    assert main(["store", "seal"]) == 2
    err = capsys.readouterr().err
    assert str(key) in err
    assert "cannot be read" in err
    assert "Traceback" not in err
    assert _on_disk(store) == before

    key.write_bytes(good)
    key.chmod(0o600)
    assert main(["store", "seal"]) == 0
    assert {k: LocalStore(store.root).get(k) for k in OBJECTS} == OBJECTS
