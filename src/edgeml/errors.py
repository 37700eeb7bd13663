"""The errors edgeml raises, as one tree.

::

    EdgemlError                      anything edgeml raises on purpose
    ├── UserError                    the user can fix it; the CLI exits 2, no traceback
    │   ├── ConfigError              settings, config file or environment are wrong
    │   ├── SpecError                a pipeline spec is invalid (carries every issue found)
    │   ├── InvalidKeyError          an object-store key is malformed
    │   └── StoreConfigError         the store cannot be used as configured
    │       ├── StoreUnreachableError    endpoint does not answer
    │       ├── StoreAccessDeniedError   credentials refused or lacking permission
    │       └── BucketNotFoundError      the bucket does not exist
    ├── StoreError                   an object-store operation failed
    │   └── ObjectNotFoundError      the key does not exist
    └── BundleRejected               a bundle or channel pointer failed verification

Errors that wrap a foreign exception keep it as ``__cause__`` (``raise ... from exc``),
so ``--debug`` shows the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BucketNotFoundError",
    "BundleRejected",
    "ConfigError",
    "EdgemlError",
    "InvalidKeyError",
    "ObjectNotFoundError",
    "SpecError",
    "SpecIssue",
    "StoreAccessDeniedError",
    "StoreConfigError",
    "StoreError",
    "StoreUnreachableError",
    "UserError",
]


class EdgemlError(Exception):
    """Base of every error edgeml raises on purpose.

    ``exit_code`` is what the CLI exits with; ``hint`` is one line on what to do next.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UserError(EdgemlError):
    """Something the user can fix: a bad input, spec, setting or request."""

    exit_code = 2


class ConfigError(UserError):
    """Settings, a config file or an environment variable hold a bad value."""


@dataclass(frozen=True, slots=True)
class SpecIssue:
    """One problem in a pipeline spec, located by its YAML path (``search.trials``)."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "(top level)"
        return f"{where}: {self.message}"


class SpecError(UserError):
    """A pipeline spec is invalid. ``issues`` lists every problem found, not just the first."""

    def __init__(self, source: str, issues: Iterable[SpecIssue]) -> None:
        self.source = source
        self.issues: Sequence[SpecIssue] = tuple(issues)
        count = len(self.issues)
        lines = [f"{source}: {count} problem{'s' if count != 1 else ''}"]
        for issue in self.issues:
            loc = f"line {issue.line}: " if issue.line else ""
            lines.append(f"  - {loc}{issue}")
        super().__init__("\n".join(lines))


class InvalidKeyError(UserError):
    """An object-store key is empty, absolute, or climbs out of the store with ``..``."""


class StoreError(EdgemlError):
    """An object-store operation failed."""


class ObjectNotFoundError(StoreError):
    """The requested key does not exist in the store."""

    def __init__(self, key: str, *, where: str = "") -> None:
        self.key = key
        super().__init__(f"no object {key!r}{' in ' + where if where else ''}")


class ObjectExistsError(StoreError):
    """``create`` found the key taken: another writer got there first."""

    def __init__(self, key: str, *, where: str = "") -> None:
        self.key = key
        super().__init__(f"object {key!r} already exists{' in ' + where if where else ''}")


class StoreConfigError(UserError, StoreError):
    """The store cannot be used as configured; the message says which setting to fix."""


class StoreUnreachableError(StoreConfigError):
    """The store's endpoint does not answer."""


class StoreAccessDeniedError(StoreConfigError):
    """The store refused the credentials or they lack a permission."""


class BucketNotFoundError(StoreConfigError):
    """The configured bucket does not exist."""


class BundleRejected(EdgemlError):
    """A bundle, blob or channel pointer failed verification; nothing from it may be used.

    ``reason`` is a stable code (``bad-signature``, ``unknown-key``, ``expired``, ``replay``,
    ``digest-mismatch``, ``too-long``, ``unsafe-path``, ``file-type``, ``malformed``,
    ``context-mismatch``: signed, but for another model, channel, version or profile, ...) for
    logs and metrics.
    """

    exit_code = 3

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{message} [{reason}]", hint=hint)
        self.reason = reason
