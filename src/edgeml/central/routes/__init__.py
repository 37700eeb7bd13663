"""One router per resource: devices, targets, telemetry, feedback, fleet, health."""
