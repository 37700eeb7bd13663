"""`import edgeml` does no work, heavy packages stay out of light paths, NannyML stays quiet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "edgeml"

_PROBE = r"""
import json, sys, threading
events = []
def hook(event, args):
    if event in ("socket.connect", "socket.bind", "socket.__new__", "subprocess.Popen",
                 "_thread.start_new_thread", "os.system"):
        events.append([event, repr(args)[:200]])
    elif event == "open":
        path = str(args[0])
        # the import system reading edgeml's own modules is fine; anything else is not
        if not path.endswith((".py", ".pyc", ".so", ".pth")) and not path.startswith("/proc"):
            events.append([event, path])
sys.addaudithook(hook)
baseline = set(sys.modules)
import edgeml
threads = threading.active_count()
new = sorted(set(sys.modules) - baseline)
print(json.dumps({"events": events, "threads": threads, "modules": new}))
"""


def _probe(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEML_", "NML_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_edgeml_starts_nothing_reads_nothing_opens_nothing() -> None:
    result = _probe(_PROBE)
    assert result["events"] == []
    assert result["threads"] == 1
    heavy = {
        "ray",
        "torch",
        "mlflow",
        "nannyml",
        "duckdb",
        "onnxruntime",
        "pandas",
        "numpy",
        "pydantic",
        "minio",
        "prometheus_client",
    }
    assert heavy.isdisjoint({m.split(".")[0] for m in result["modules"]})  # type: ignore[union-attr]


def test_edgeml_cli_imports_no_cluster_packages() -> None:
    code = (
        "import sys; import edgeml.cli, edgeml.spec, edgeml.store, edgeml.settings; import json; "
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    modules = {m.split(".")[0] for m in _probe(code)["modules"]}  # type: ignore[union-attr]
    assert modules.isdisjoint({"ray", "torch", "mlflow", "nannyml", "duckdb", "pandas", "sklearn"})


def test_nannyml_is_imported_only_through_the_taming_helper() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "_thirdparty.py":
            continue
        if re.search(r"^\s*(import nannyml|from nannyml)", path.read_text(), re.MULTILINE):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_import_nannyml_turns_usage_logging_off_without_the_user() -> None:
    code = (
        "import os, json\n"
        "assert 'NML_DISABLE_USAGE_LOGGING' not in os.environ\n"
        "from edgeml._thirdparty import import_nannyml\n"
        "nml = import_nannyml()\n"
        "import segment.analytics as sa\n"
        "print(json.dumps({'env': os.environ.get('NML_DISABLE_USAGE_LOGGING'), 'send': sa.send}))\n"
    )
    result = _probe(code)
    assert result == {"env": "1", "send": False}


def test_what_a_device_runs_imports_no_cluster_packages() -> None:
    """Bundle verification, channel pointers and the runtime: all a device with `edgeml[edge]` has."""
    code = (
        "import sys, json; import edgeml.bundle.verify, edgeml.bundle.channels, edgeml.agent.runtime; "
        "print(json.dumps({'modules': sorted(sys.modules)}))"
    )
    modules = {m.split(".")[0] for m in _probe(code)["modules"]}  # type: ignore[union-attr]
    heavy = {
        "ray",
        "torch",
        "mlflow",
        "nannyml",
        "duckdb",
        "pandas",
        "sklearn",
        "onnx",
        "pyarrow",
        "openvino",
    }
    assert modules.isdisjoint(heavy), modules & heavy
