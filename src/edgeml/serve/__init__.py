"""``edgeml serve``: a channel's model on Ray Serve, answering as the edge agent does.

- :mod:`edgeml.serve.config`: what a replica needs to follow a channel (:class:`ServeConfig`)
  and the first sync, which runs every check a device runs.
- :mod:`edgeml.serve.replica`: the replica: the agent's syncer, model holder and HTTP app,
  with ``serve.batch`` in front of the model.
- :mod:`edgeml.serve.deploy`: Ray Serve set-up (direct ingress, no access logs, the spec's
  batching and autoscaling) and the URLs it serves on.

Importing this package imports no Ray; :mod:`edgeml.serve.replica` does.
"""

from edgeml.serve.config import ServeConfig, follow, public_keys
from edgeml.serve.deploy import Deployed, build_app, check_channel, deploy, replica_urls

__all__ = [
    "Deployed",
    "ServeConfig",
    "build_app",
    "check_channel",
    "deploy",
    "follow",
    "public_keys",
    "replica_urls",
]
