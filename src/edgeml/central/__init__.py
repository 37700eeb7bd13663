"""The central node: fleet registry, device auth, telemetry in DuckDB, drift, alerts, the fleet page.

:func:`edgeml.central.app.create_app` builds the service from a
:class:`~edgeml.central.config.CentralConfig`; the telemetry store it reads and writes is
:mod:`edgeml.telemetry` (run in a process of its own); ``edgeml central run`` serves it.
Importing this package loads nothing heavy, so the drift and alert functions next to it stay
importable on their own.
"""
