"""Imports of third-party packages that need taming before use.

Every edgeml module imports NannyML through :func:`import_nannyml`, never directly
(a test enforces it), so usage logging is off before NannyML's first line runs and
the appliance never phones home.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["import_nannyml"]


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
