"""Validation: expectations over a snapshot, a report, quarantine, a validated dataset."""

from edgeml.validate.run import ValidationFailedError, ValidationReport, validate

__all__ = ["ValidationFailedError", "ValidationReport", "validate"]
