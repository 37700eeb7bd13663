"""Pipeline specs: the YAML contract every stage reads.

>>> from edgeml.spec import load_spec
>>> spec = load_spec("examples/pump-faults.yaml")  # doctest: +SKIP
"""

from edgeml.spec.loader import load_spec, parse_spec
from edgeml.spec.models import Spec

__all__ = ["Spec", "load_spec", "parse_spec"]
