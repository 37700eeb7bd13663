"""The edge agent: runtime, serving, sync, telemetry. Imports nothing from ray, torch, mlflow,
duckdb or nannyml, so a device installs ``edgeml[edge]`` alone."""
