"""Agents for the kill -9 test: each publishes the next version and swaps to it, over and over.

Run as ``python swap_child.py PUBLISHER_HOME STORE RING STATE_DIR``. The process imports
everything once, then forks a fresh agent for every line it reads on stdin (a fork costs
milliseconds where a new interpreter costs seconds, which on a loaded machine is most of the
test). An agent prints ``ready PID`` once the installed bundle is loaded, then for each round
``sync-start`` when the sync begins (the next version is already published), the sync's own
result line and ``sync-end SECONDS``, until it is killed; this process then prints
``exited STATUS`` (os.waitpid's status) and waits for the next line. A kill that lands between a
``sync-start`` and its ``sync-end`` landed inside a swap.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.conftest import Publisher
from edgeml.agent.config import AgentConfig
from edgeml.agent.model import ModelHolder
from edgeml.agent.sync import HealthWatch, Syncer
from edgeml.bundle.keys import KeyRing, load_signer
from edgeml.bundle.rollout import current
from edgeml.profiles import get_profile
from edgeml.store.local import LocalStore


def main() -> None:
    home, store_dir, ring, state_dir = map(Path, sys.argv[1:5])
    store = LocalStore(store_dir)
    publisher = Publisher(store, load_signer(home), home, ring, state_dir.parent / "work")
    config = AgentConfig.model_validate(
        {
            "device_id": "dev-kill",
            "profile": "x86-64-generic",
            "model": "pump",
            "store": {"url": store.url},
            "keyring": str(ring),
            "state_dir": str(state_dir),
            "sync": {"health_window_s": 0},
        }
    )
    holder = ModelHolder()
    syncer = Syncer(
        config, get_profile("x86-64-generic"), store, KeyRing.from_dir(ring), holder, HealthWatch()
    )
    syncer.load_installed()
    print(f"ready {os.getpid()}", flush=True)
    while True:
        pointer = current(store, "pump", "stable")
        publisher.release((pointer.version if pointer else 0) + 1)
        print("sync-start", flush=True)
        started = time.perf_counter()
        result = syncer.run_once()
        print(result, flush=True)
        print(f"sync-end {time.perf_counter() - started:.6f}", flush=True)


def fork_agents() -> None:
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                main()
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        print(f"exited {status}", flush=True)


if __name__ == "__main__":
    fork_agents()
