"""edgeml: an on-prem / edge ML appliance.

Importing this package does no work: it starts no thread, opens no socket and reads
no file. Each stage lives in its own subpackage (``edgeml.spec``, ``edgeml.store``, ...).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
