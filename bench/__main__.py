"""Run every benchmark in one go (``make bench``), then check RESULTS.md carries this revision.

    .venv/bin/python -m bench [--smoke] [--only NAME ...]

Each benchmark runs in its own process (``python -m bench.NAME``), one after the other, and
rewrites its own section of ``bench/RESULTS.md``. A benchmark that fails does not stop the
others; the exit status says whether any failed, or whether a section does not carry the
revision just measured. ``--smoke`` runs each at tiny sizes and writes nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench import BENCHMARKS
from bench.common import ROOT, git_revision, result_sections, stamp_of


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no claims, nothing written")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="these benchmarks only")
    args = parser.parse_args()
    revision = git_revision()
    if revision.endswith("-dirty") and not args.smoke:
        print(f"warning: the work tree has changes: the figures will be stamped {revision}", flush=True)
    failed, times = [], {}
    for name in args.only or BENCHMARKS:
        print(f"\n== bench.{name}", flush=True)
        start = time.monotonic()
        argv = [sys.executable, "-m", f"bench.{name}", *(["--smoke"] if args.smoke else [])]
        if subprocess.run(argv, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
        times[name] = time.monotonic() - start
    for name, seconds in times.items():
        print(f"{name:>15}: {seconds:6.1f} s{'  FAILED' if name in failed else ''}")
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    if args.smoke:
        return 0
    sections = result_sections()
    stale = [
        n for n in args.only or BENCHMARKS if n not in sections or stamp_of(sections[n]).revision != revision
    ]
    if stale:
        print(f"sections of bench/RESULTS.md not stamped {revision}: {', '.join(stale)}")
        return 1
    print(
        f"every section of bench/RESULTS.md is stamped {revision}: update the figures the README quotes "
        "(tests/test_bench_results.py checks them)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
