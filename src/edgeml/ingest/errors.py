"""Errors of the ingest stage that callers act on."""

from __future__ import annotations

from edgeml.errors import UserError

__all__ = ["SourceUnavailableError"]


class SourceUnavailableError(UserError):
    """A source could not be reached (its database, server or files): worth trying again later."""
