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
    ├── BundleRejected               a bundle or channel pointer failed verification
    ├── Unavailable                  the central node cannot serve this now (503, Retry-After)
    │   ├── Overloaded               too much telemetry waits to be written (429)
    │   ├── StoreClosed              the telemetry store is closed, or its writer died
    │   └── TargetsUnavailable       the channel pointers cannot be read now
    ├── NoReferenceRows              a model version has no usable reference rows for NannyML
    └── (UserError) requests to the central node: Unauthorized 401, Forbidden 403, UnknownDevice
        404, DeviceExists 409, TooLarge 413, InvalidRequest 422, BatchConflict 422

Every error carries the HTTP status it is answered with (``http_status``; 500 unless the
class says otherwise); the central node maps them all in one exception handler.

Errors that wrap a foreign exception keep it as ``__cause__`` (``raise ... from exc``),
so ``--debug`` shows the whole chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BatchConflict",
    "BucketNotFoundError",
    "BundleRejected",
    "ConfigError",
    "DeviceExists",
    "EdgemlError",
    "Forbidden",
    "InvalidKeyError",
    "InvalidRequest",
    "NoReferenceRows",
    "ObjectNotFoundError",
    "Overloaded",
    "SpecError",
    "SpecIssue",
    "StoreAccessDeniedError",
    "StoreClosed",
    "StoreConfigError",
    "StoreError",
    "StoreUnreachableError",
    "TargetsUnavailable",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnknownDevice",
    "UserError",
]


class EdgemlError(Exception):
    """Base of every error edgeml raises on purpose.

    ``exit_code`` is what the CLI exits with; ``http_status`` what the central node answers
    with; ``hint`` is one line on what to do next.
    """

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def http_detail(self) -> object:
        """The ``detail`` of the HTTP answer's JSON body."""
        return str(self)


class UserError(EdgemlError):
    """Something the user can fix: a bad input, spec, setting or request."""

    exit_code = 2
    http_status = 400


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


# --- the central node -----------------------------------------------------------------------


class Unavailable(EdgemlError):
    """The central node cannot serve this now; the caller should retry after a while."""

    http_status = 503


class Overloaded(Unavailable):
    """Too many batches wait for the writer: the caller should come back later."""

    http_status = 429


class StoreClosed(Unavailable):
    """The telemetry store is closed (or its writer died): nothing can be written."""


class TargetsUnavailable(Unavailable):
    """The object store or the key ring cannot be read now."""


class NoReferenceRows(EdgemlError):
    """A version has no usable reference rows for NannyML; the message says why."""


class BatchConflict(UserError):
    """A batch id this device already used, with a different body."""

    http_status = 422

    def http_detail(self) -> object:
        return [{"loc": ["body", "batch_id"], "msg": self.message, "type": "batch_id_reused"}]


class DeviceExists(UserError):
    """A device with this id is already registered."""

    http_status = 409


class UnknownDevice(UserError):
    """No device has this id."""

    http_status = 404


class Unauthorized(UserError):
    """No credentials, or credentials that are not (or no longer) valid."""

    http_status = 401


class Forbidden(UserError):
    """Valid credentials that may not do this."""

    http_status = 403


class TooLarge(UserError):
    """A request body over the configured limit."""

    http_status = 413


class InvalidRequest(UserError):
    """A request body that does not validate; ``errors`` name each bad field (``loc``, ``msg``, ``type``)."""

    http_status = 422

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors))

    def http_detail(self) -> object:
        return self.errors


# --- raised outside the central node (moved here so every error lives in one tree) -----------


class InputError(UserError):
    """A request the model cannot take: ``field`` names what is wrong, ``status`` is the HTTP answer."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message
        self.status = status
        self.http_status = status


class GoldenMismatch(EdgemlError):
    """The staged model does not reproduce its golden outputs: it must not serve."""


class OnnxFormatError(EdgemlError, ValueError):
    """The bytes are not a well-formed ONNX protobuf."""


class ExpressionError(UserError, ValueError):
    """The expression is outside the language; the message says where and why."""


class SourceUnavailableError(UserError):
    """A source could not be reached (its database, server or files): worth trying again later."""


class ValidationFailedError(UserError):
    """An ``error``-severity expectation failed; the report and quarantine are written.

    ``report`` is the stage's ``ValidationReport`` (typed loosely: errors import nothing of the stages).
    """

    def __init__(self, report: Any) -> None:
        self.report = report
        lines = [f"validation of {report.dataset} snapshot {report.snapshot} failed:"]
        for o in report.errors:
            where = f" on column {o.column}" if o.column else ""
            examples = f"; e.g. {', '.join(map(str, o.examples[:3]))}" if o.examples else ""
            lines.append(f"  - {o.name}{where}: {o.detail}{examples}")
        super().__init__(
            "\n".join(lines),
            hint=f"see catalog/{report.dataset}/validation/"
            f"{report.snapshot}.json and quarantine/{report.dataset}/validation/",
        )


class RateLimited(Overloaded):
    """One device sent more than its share; it may send again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
