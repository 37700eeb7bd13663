"""Simulators that generate realistic data for demos, tests and benchmarks."""

from edgeml.simulate.sensors import FAULTS, SENSORS, Drift, SensorSimulation, simulate_sensors

__all__ = ["FAULTS", "SENSORS", "Drift", "SensorSimulation", "simulate_sensors"]
