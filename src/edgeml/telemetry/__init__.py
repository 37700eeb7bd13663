"""Telemetry: the agent -> central wire contract (:mod:`.schema`) and the central node's store.

The agent imports :mod:`edgeml.telemetry.schema` alone; the central node reads and writes
through the :class:`~edgeml.telemetry.store.TelemetryStore` interface, served by DuckDB
(:mod:`edgeml.telemetry.db`), in a process of its own (:mod:`edgeml.telemetry.process`).
"""
