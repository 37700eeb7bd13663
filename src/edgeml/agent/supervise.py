"""Supervised background work: a bug in one round never ends the agent's threads silently.

The sync, MQTT and telemetry threads each run their rounds through a :class:`Supervisor`. An
unexpected exception is logged once with its traceback (the same failure again is one line at
debug), counted (``edgeml_agent_thread_failures_total``, and
``edgeml_agent_thread_down_since_timestamp_seconds`` while it lasts), kept for ``/agent/status`` and
readiness (the thread is *down* until a round succeeds), and the loop goes on after an
exponential backoff with jitter. Expected failures (a rejected bundle, the store or central
unreachable) are handled inside the rounds and are not this module's business.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from edgeml.observability import track_thread_round

__all__ = ["Supervisor"]

log = logging.getLogger("edgeml.agent")

T = TypeVar("T")


class Supervisor:
    """The health of one background loop; ``call`` runs a round, ``start`` runs a loop of them."""

    def __init__(self, name: str, *, backoff_s: float = 1.0, max_backoff_s: float = 60.0) -> None:
        self.name = name
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.failures = 0  # consecutive: the backoff exponent; 0 while up
        self.failures_total = 0
        self.last_error: str | None = None
        self.down_since: float | None = None  # unix time of the first failure in a row
        self._reported = False  # the gauge says the current state already
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        return self.failures == 0

    def call(self, round_: Callable[[], T]) -> T | None:
        """``round_()``; on an unexpected exception: logged once, counted, marked down, None."""
        try:
            result = round_()
        except Exception as exc:  # the point of this class: any bug in a round, not only foreseen ones
            self._failed(exc)
            return None
        if self.failures or not self._reported:
            self._recovered()
        return result

    def backoff(self) -> float:
        """Seconds to wait after the latest failure: doubling, capped, with equal jitter."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** min(max(self.failures - 1, 0), 30))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 (not crypto)

    def _failed(self, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        with self._lock:
            first = self.failures == 0
            again = error == self.last_error
            self.failures += 1
            self.failures_total += 1
            self.last_error = error
            if first:
                self.down_since = time.time()
            self._reported = True
        track_thread_round(self.name, self.down_since)
        if again:
            log.debug("%s thread: the same failure again (%d in a row): %s", self.name, self.failures, error)
        else:
            log.error("%s thread: round failed; it goes on after a backoff", self.name, exc_info=exc)

    def _recovered(self) -> None:
        with self._lock:
            was_down = self.failures > 0
            self.failures = 0
            self.down_since = None
            self._reported = True
        track_thread_round(self.name, None)
        if was_down:
            log.warning("%s thread: recovered (last failure: %s)", self.name, self.last_error)

    def status(self) -> dict[str, Any]:
        return {
            "up": self.up,
            "failures_total": self.failures_total,
            "failures_in_a_row": self.failures,
            "last_error": self.last_error,
            "down_since": self.down_since,
        }

    # a loop of rounds on a thread -----------------------------------------------------

    def start(self, round_: Callable[[], float], stop: threading.Event) -> threading.Thread:
        """Run ``round_`` until ``stop``; it returns seconds to wait before the next one (a failed
        round waits the backoff instead)."""

        def main() -> None:
            while not stop.is_set():
                wait = self.call(round_)
                stop.wait(self.backoff() if wait is None else wait)

        self._thread = threading.Thread(target=main, name=f"edgeml-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
