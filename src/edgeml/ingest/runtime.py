"""Ray for the stages: join a cluster when one is named, else start a local one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cluster_cpus", "ray_session"]


@contextmanager
def ray_session(address: str | None, *, progress_bars: bool = True) -> Iterator[None]:
    """Use the running Ray, or connect to ``address``, or start a local Ray for the block.

    Only what this function started is shut down on exit.
    """
    import ray
    from ray.data import DataContext

    started = False
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=True,
        )
        started = True
    ctx = DataContext.get_current()
    if cluster_cpus() <= 4:
        # Ray Data reserves resources per operator for big clusters; on a few cores that holds the
        # second read/land task back and the work runs on one core (measured in bench/ingest_csv.py).
        ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = False
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_cpus() -> int:
    """CPUs in the cluster: sizes blocks so every core works, no more (small-cluster friendly)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))
