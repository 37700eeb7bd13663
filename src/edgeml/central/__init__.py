"""The central node: fleet registry, device auth, telemetry in DuckDB, drift, alerts, the fleet page.

:func:`edgeml.central.app.create_app` builds the service from a
:class:`~edgeml.central.config.CentralConfig`; :mod:`edgeml.central.db` is the telemetry store
and its query API (run in a process of its own by :mod:`edgeml.central.store_process`);
``edgeml central run`` serves it. Importing this package loads nothing
heavy, so the drift and alert functions next to it stay importable on their own.
"""
