"""kill -9 at random points of a swap, again and again: the agent always restarts on a whole bundle.

The kill points come from what this machine measures, not from a fixed delay: fresh agents
time their first sync, then each new agent runs 1-3 whole rounds and is killed at a random point
within 1.5 times that span after its next sync began (about two thirds inside the sync, the rest
after it, so restarts find interrupted, unconfirmed and confirmed swaps). Whether a kill landed
inside a sync is read from the agent's own markers (a ``sync-start`` without its
``sync-end``), so a slow or fast machine changes the timings, never what the test proves.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeml.agent.install import Installation
from edgeml.agent.model import LoadedModel

from .conftest import Publisher, keyring

pytestmark = pytest.mark.slow
REPETITIONS = 8
CALIBRATION_SYNCS = 3


class Agents:
    """swap_child.py: one interpreter that forks a fresh agent per round, each killed by the test."""

    def __init__(self, publisher: Publisher, state_dir: Path) -> None:
        child = Path(__file__).with_name("swap_child.py")
        args = [str(publisher.home), str(publisher.store.root), str(publisher.ring), str(state_dir)]
        self.proc = subprocess.Popen(
            [sys.executable, str(child), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def start(self) -> int:
        """Fork an agent; its pid once it has loaded the installed bundle."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return int(self.read_until("ready")[-1].split()[1])

    def read_until(self, prefix: str) -> list[str]:
        """Lines up to and including the first that starts with ``prefix``."""
        assert self.proc.stdout is not None
        lines = []
        while line := self.proc.stdout.readline():
            lines.append(line.strip())
            if line.startswith(prefix):
                return lines
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        raise AssertionError(f"the agents ended before {prefix!r}: {lines}\n{err}")

    def kill(self, pid: int) -> list[str]:
        """SIGKILL the agent; what it printed until it died. It must not have died on its own."""
        os.kill(pid, signal.SIGKILL)
        lines = self.read_until("exited")
        status = int(lines[-1].split()[1])
        assert os.WIFSIGNALED(status), f"the agent died on its own: {lines}"
        assert os.WTERMSIG(status) == signal.SIGKILL, lines
        return lines

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)


def _measure_sync_seconds(agents: Agents) -> float:
    """The median first sync of a fresh agent (the kind every kill interrupts; later ones are faster)."""
    durations = []
    for _ in range(CALIBRATION_SYNCS):
        pid = agents.start()
        durations.append(float(agents.read_until("sync-end")[-1].split()[1]))
        agents.kill(pid)
    return statistics.median(durations)


def test_the_agent_survives_kill_9_anywhere_in_a_swap(publisher: Publisher, tmp_path: Path) -> None:
    state_dir = tmp_path / "device"
    rng = random.Random(7)
    ring = keyring(publisher)
    agents = Agents(publisher, state_dir)
    try:
        span = _measure_sync_seconds(agents)
        versions_seen: set[int] = set()
        kills_inside_sync = 0
        for _ in range(REPETITIONS):
            pid = agents.start()
            # a few whole rounds first: a swap is confirmed by the round after it (its health
            # window), so without them every restart would fall back to the first version
            for _ in range(rng.randint(1, 3)):
                agents.read_until("sync-end")
            agents.read_until("sync-start")
            time.sleep(rng.uniform(0.0, 1.5 * span))
            printed = agents.kill(pid)
            kills_inside_sync += not any(line.startswith("sync-end") for line in printed)
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
            f"only {kills_inside_sync} of {REPETITIONS} kills landed inside a sync (span {span:.3f} s)"
        )
        assert len(versions_seen) >= 3, (
            f"restarts found only versions {sorted(versions_seen)}: no swap finished"
        )
        assert kills_inside_sync < REPETITIONS, "no kill landed after a finished sync"
    finally:
        agents.close()
