"""kill -9 at random points of a swap, again and again: the agent always restarts on a whole bundle.

The kill points come from what this machine measures, not from a fixed delay: a first child
times a few syncs, then every kill lands at a random point within 1.5 times that measured span
after the child says a sync began (about two thirds inside the sync, the rest after it, so
restarts find both interrupted and finished swaps). Whether a kill landed inside a sync is read from the child's own
markers (a ``sync-start`` without its ``sync-end``), so a slow or fast machine changes the
timings, never what the test proves.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from edgeml.agent.install import Installation
from edgeml.agent.model import LoadedModel

from .conftest import Publisher, keyring

pytestmark = pytest.mark.slow
REPETITIONS = 30
CALIBRATION_SYNCS = 4


def _start(publisher: Publisher, state_dir: Path) -> subprocess.Popen[str]:
    child = Path(__file__).with_name("swap_child.py")
    args = [str(publisher.home), str(publisher.store.root), str(publisher.ring), str(state_dir)]
    proc = subprocess.Popen(
        [sys.executable, str(child), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"the child did not start: {line!r}\n{err}")
    return proc


def _wait_for(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith(prefix):
            return line.strip()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"the child ended before {prefix!r}:\n{err}")


def _measure_sync_seconds(publisher: Publisher, state_dir: Path) -> float:
    proc = _start(publisher, state_dir)
    try:
        durations = [float(_wait_for(proc, "sync-end").split()[1]) for _ in range(CALIBRATION_SYNCS)]
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    return statistics.median(durations)


def test_the_agent_survives_kill_9_anywhere_in_a_swap(publisher: Publisher, tmp_path: Path) -> None:
    state_dir = tmp_path / "device"
    rng = random.Random(7)
    ring = keyring(publisher)
    span = _measure_sync_seconds(publisher, state_dir)
    versions_seen: set[int] = set()
    kills_inside_sync = 0
    for _ in range(REPETITIONS):
        proc = _start(publisher, state_dir)
        _wait_for(proc, "sync-start")
        try:
            proc.wait(timeout=rng.uniform(0.0, 1.5 * span))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, f"the child died on its own:\n{err}"
        kills_inside_sync += "sync-end" not in out
        # what a restarted agent does before serving: recover, then verify and load `current`
        install = Installation(state_dir)
        install.recover()
        folder = install.folder("current")
        assert folder is not None, "the calibration installed a bundle, yet nothing is current"
        model = LoadedModel.open(folder, ring)
        model.smoke_test()
        versions_seen.add(model.version)
        assert not list(install.staging.glob(".stage-*"))
    assert kills_inside_sync >= REPETITIONS // 3, (
        f"only {kills_inside_sync} of {REPETITIONS} kills landed inside a sync (measured span {span:.3f} s)"
    )
    assert len(versions_seen) > 5, f"restarts found only versions {sorted(versions_seen)}: no swap finished"
    assert kills_inside_sync < REPETITIONS, "no kill landed after a finished sync"
