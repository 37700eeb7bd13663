"""kill -9 at random points of a swap, again and again: the agent always restarts on a whole bundle."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeml.agent.install import Installation
from edgeml.agent.model import LoadedModel

from .conftest import Publisher, keyring

pytestmark = pytest.mark.slow
REPETITIONS = 50


def test_the_agent_survives_kill_9_anywhere_in_a_swap(publisher: Publisher, tmp_path: Path) -> None:
    state_dir = tmp_path / "device"
    child = Path(__file__).with_name("swap_child.py")
    rng = random.Random(7)
    ring = keyring(publisher)
    versions_seen: set[int] = set()
    swaps = 0
    for _ in range(REPETITIONS):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(child),
                str(publisher.home),
                str(publisher.store.root),
                str(publisher.ring),
                str(state_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        swaps += out.count("installed v")
        # what a restarted agent does before serving: recover, then verify and load `current`
        install = Installation(state_dir)
        install.recover()
        folder = install.folder("current")
        if folder is None:
            assert swaps == 0, "a bundle was installed, yet nothing is current after the kill"
            continue
        model = LoadedModel.open(folder, ring)
        model.smoke_test()
        versions_seen.add(model.version)
        assert not list(install.staging.glob(".stage-*"))
    assert swaps >= REPETITIONS // 2, f"only {swaps} swaps happened: the kills did not land inside swaps"
    assert len(versions_seen) > 5
