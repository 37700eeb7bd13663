"""Third-party packages tamed before use: the appliance phones no one.

An on-prem appliance sends nothing its operator did not configure, yet several of its libraries
report usage by default: Ray (cluster usage stats to usage-stats.ray.io), MLflow 3 (telemetry
events), OpenVINO's converter and NNCF (Google Analytics through openvino-telemetry, unless its
consent file says no) and NannyML (Segment). :func:`no_usage_reporting` turns each off the way the
library documents — environment variables, openvino-telemetry's own opt-out file — and the CLI
calls it before any of them loads, so the Ray workers a command starts inherit it; an operator who
set one of the variables, or answered OpenVINO's question, keeps that choice. Every edgeml module
also imports NannyML through :func:`import_nannyml`, never directly (a test enforces it), which
switches its logging off in-process too.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

__all__ = ["USAGE_REPORTING_OFF", "import_nannyml", "no_usage_reporting", "openvino_consent_file"]

#: the variables each library reads, and the value that turns its reporting off
USAGE_REPORTING_OFF = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "NML_DISABLE_USAGE_LOGGING": "1",
    "DO_NOT_TRACK": "true",  # the cross-tool convention (consoledonottrack.com); MLflow reads it too
}


def openvino_consent_file() -> Path:
    """Where openvino-telemetry keeps the user's answer (``1`` opts in, ``0`` out), on Linux and macOS."""
    return Path.home() / "intel" / "openvino_telemetry"


def no_usage_reporting() -> None:
    """Set each library's off switch unless the operator set it; opt out of OpenVINO's telemetry
    unless the operator answered already (what its ``opt_in_out --opt_out`` writes)."""
    for name, value in USAGE_REPORTING_OFF.items():
        os.environ.setdefault(name, value)
    consent = openvino_consent_file()
    if consent.exists():
        return
    try:
        consent.parent.mkdir(parents=True, exist_ok=True)
        consent.write_text("0", encoding="utf-8")
    except OSError:  # a home it cannot write: openvino-telemetry cannot keep its client id either
        pass


def import_nannyml() -> ModuleType:
    """Import NannyML with its usage logging switched off."""
    # NannyML checks this variable each time it would log; set it before the import too,
    # because the package may log during import in some versions.
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"
    import nannyml

    module: ModuleType = nannyml
    nannyml.disable_usage_logging()
    try:
        import segment.analytics as segment_analytics
    except ImportError:  # a NannyML without the Segment client cannot send anything
        return module
    segment_analytics.send = False  # belt and braces: the client itself sends nothing
    return module
