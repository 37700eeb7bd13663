"""Every benchmark still runs against the product (its ``--smoke`` mode), and measures only what it started.

A benchmark that no longer matches the product (a moved module, a changed API or route, a
spec it cannot load) fails here, in CI, not on the day someone runs ``make bench``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from bench import BENCHMARKS
from bench.common import (
    RESULTS,
    SMOKE_NOTE,
    check_listener,
    example_spec,
    free_port,
    server_process,
)

ROOT = Path(__file__).resolve().parents[1]
OLD_AGENT_PORT = 18501  # where bench/agent_serving.py used to start the agent, whatever listened there


class Decoy(ThreadingHTTPServer):
    """A stranger on 127.0.0.1 that answers every request 200 and counts them."""

    hits = 0


class _Answer(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        assert isinstance(self.server, Decoy)
        self.server.hits += 1
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = b'{"decoy": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def _decoy(port: int) -> Iterator[Decoy]:
    server = Decoy(("127.0.0.1", port), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    yield from _decoy(free_port())


def run_smoke(name: str) -> subprocess.CompletedProcess[str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--smoke"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def assert_smoke_ran(proc: subprocess.CompletedProcess[str], results_before: bytes) -> None:
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert SMOKE_NOTE in proc.stdout  # it claims nothing
    assert "PASS" not in proc.stdout.split("Quiet machine:")[-1]
    assert RESULTS.read_bytes() == results_before  # and writes nothing


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "agent_serving"])
def test_benchmark_smoke(name: str) -> None:
    before = RESULTS.read_bytes()
    assert_smoke_ran(run_smoke(name), before)


@pytest.mark.slow
@pytest.mark.integration
def test_agent_serving_measures_its_own_servers_with_a_stranger_on_the_old_port() -> None:
    """What broke the benchmark (issue #26): another server already listening on 18501."""
    before = RESULTS.read_bytes()
    try:
        stranger = _decoy(OLD_AGENT_PORT)
        server = next(stranger)
    except OSError:  # something else already listens there: a stranger all the same
        stranger, server = None, None
    try:
        proc = run_smoke("agent_serving")
    finally:
        if stranger is not None:
            stranger.close()
    assert_smoke_ran(proc, before)
    assert server is None or server.hits == 0
    assert "edgeml agent, POST /predict" in proc.stdout
    for label in ("OIP v2 infer, binary tensors, one row", "OIP v2 gRPC ModelInfer, 256 rows"):
        assert label in proc.stdout  # the protocols' cases (issue #27) ran in the same run
    assert re.search(r"agent requests failed\s+0\s", proc.stdout)


def test_a_server_that_does_not_answer_from_its_port_is_refused(decoy: Decoy) -> None:
    """The port answers, but not from the process started: the benchmark stops rather than measure it."""
    url = f"http://127.0.0.1:{decoy.server_address[1]}/"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    with (
        pytest.raises(RuntimeError, match=r"not by the server under test this benchmark started"),
        server_process(sleeper, url, name="server under test", timeout_s=20),
    ):
        pass
    assert decoy.hits >= 1  # it did answer the health check: answering is not enough


def test_a_server_answering_from_its_own_port_is_measured() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with server_process(argv, f"http://127.0.0.1:{port}/", name="http.server", timeout_s=60) as proc:
        check_listener(port, proc.pid)  # again, by hand: the listener is the child
    assert proc.poll() is not None  # stopped on the way out


def test_check_listener_names_the_stranger(decoy: Decoy) -> None:
    started = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # this process's command line follows the pid (pytest's, or an xdist worker's `python -c`)
        with pytest.raises(
            RuntimeError, match=rf"answered by pid {os.getpid()} \(.*python.*\), not by the agent"
        ):
            check_listener(decoy.server_address[1], started.pid, "agent")
    finally:
        started.kill()
        started.wait()


def test_nothing_listening_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no process this user can see"):
        check_listener(free_port(), os.getpid())


def test_example_spec_applies_the_benchmark_changes() -> None:
    spec = example_spec(
        "pump-faults",
        search={"families": ["random_forest"], "trials": 3, "space": {"mlp": None}},
        features={"row": []},
    )
    assert spec.name == "pump-faults"  # the example itself, not a copy
    assert spec.search.families == ["random_forest"]
    assert spec.search.trials == 3
    assert set(spec.search.space) == {"random_forest"}  # merged, and mlp's removed
    assert spec.features.row == []
    assert [w.name for w in spec.features.window][:1] == ["vibration_mean_30"]  # untouched


def test_example_spec_rejects_a_change_the_spec_does_not_allow() -> None:
    from edgeml.errors import SpecError

    with pytest.raises(SpecError, match=r"search\.trials"):
        example_spec("pump-faults", search={"trials": 0})


def test_benchmarks_import_edgeml_only_through_common_and_never_edit_sys_path() -> None:
    for path in sorted((ROOT / "bench").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, path.name
        if path.name != "common.py":
            assert "from edgeml" not in text, path.name
            assert "import edgeml" not in text, path.name


def test_every_benchmark_is_run_by_make_bench_and_has_a_smoke_mode() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "__main__", "common"}
    assert scripts == set(BENCHMARKS)
    for name in BENCHMARKS:
        assert "parser(__doc__)" in (ROOT / "bench" / f"{name}.py").read_text(encoding="utf-8"), name


@pytest.mark.slow
def test_every_edgeml_name_the_benchmarks_use_resolves() -> None:
    """A module moved in src/ fails here, naming the entry of bench/common.py's table to repoint."""
    from bench import common

    missing = []
    for name, (module, attr) in common._EDGEML.items():
        try:
            getattr(common, name)
        except (ImportError, AttributeError) as exc:
            missing.append(f"{name} ({module}.{attr}): {exc}")
    assert not missing, "\n".join(missing)
