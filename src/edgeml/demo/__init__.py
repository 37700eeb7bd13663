"""``edgeml demo``: the whole loop on the embedded default, and its report page.

``run`` is the pipeline half (data to a signed channel), ``fleet`` the field half (central
node, agents, drift, retraining, canary, promotion), ``report`` the HTML page, ``common`` what
they share.
"""

from edgeml.demo.common import DemoOptions, DemoResult
from edgeml.demo.run import example_specs, run_demo

__all__ = ["DemoOptions", "DemoResult", "example_specs", "run_demo"]
