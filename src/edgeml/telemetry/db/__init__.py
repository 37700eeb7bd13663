"""The telemetry store on DuckDB: :class:`~edgeml.telemetry.db.store.DuckDBStore`.

``tables`` (the tables, opening the file, migrations), ``batch_group`` (telemetry laid out as
the tables' Arrow rows), ``devices`` (the fleet registry), ``writer`` (the one writing
thread), ``queries`` (reads), ``store`` (the store that ties them).
"""
