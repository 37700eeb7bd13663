"""What every router shares: the node's state as a dependency, bearer-token auth, error bodies."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from edgeml.central.services.state import CentralState
from edgeml.central.services.telemetry import bearer_token
from edgeml.errors import EdgemlError, RateLimited, Unauthorized, Unavailable
from edgeml.telemetry.schema import Device

__all__ = [
    "AdminDep",
    "DeviceDep",
    "DeviceOrAdminDep",
    "ErrorBody",
    "FleetReaderDep",
    "RegistrarDep",
    "StateDep",
    "error_response",
    "errors",
]


class ErrorBody(BaseModel):
    detail: str


_DESCRIPTIONS = {
    400: "This node is not configured for the request (the message says what is missing)",
    401: "No token, or a token that is not (or no longer) valid",
    403: "The token is valid but may not do this",
    404: "No such device",
    409: "Already exists",
    413: "The request body is larger than limits.max_body_bytes",
    429: "Too much telemetry waits to be written, or this device sent more than its rate; "
    "retry after Retry-After seconds",
    503: "The telemetry store or the object store cannot serve now; retry after Retry-After seconds",
}


def error_response(exc: EdgemlError, retry_after_s: float) -> JSONResponse:
    """The HTTP answer to ``exc``: the one mapping of errors to answers, for every route and the intake."""
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = str(retry_after_s)
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": exc.http_detail()}, exc.http_status, headers=headers)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each with an :class:`ErrorBody`."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def _state(request: Request) -> CentralState:
    state: CentralState = request.app.state.central
    return state


StateDep = Annotated[CentralState, Depends(_state)]


def _bearer(name: str, description: str) -> HTTPBearer:
    return HTTPBearer(scheme_name=name, description=description, auto_error=False)


_admin_scheme = _bearer("admin", "The admin token (central.yaml: admin_token_file)")
device_scheme = _bearer("device", "A device token, as registration returned it")
_device_or_admin_scheme = _bearer("deviceOrAdmin", "A device token or the admin token")
_registrar_scheme = _bearer("bootstrapOrAdmin", "The bootstrap token or the admin token")
_fleet_scheme = _bearer("fleetReader", "The admin token, when central.yaml sets fleet_auth: admin")

Credentials = HTTPAuthorizationCredentials | None


def _token(credentials: Credentials) -> str:
    """The token FastAPI's HTTPBearer found, checked as the telemetry intake checks a header."""
    return bearer_token(None if credentials is None else f"Bearer {credentials.credentials}")


def _same(presented: str, secret: str | None) -> bool:
    return secret is not None and hmac.compare_digest(presented.encode(), secret.encode())


def _admin(state: StateDep, credentials: Annotated[Credentials, Depends(_admin_scheme)]) -> None:
    if not _same(_token(credentials), state.admin_token):
        raise Unauthorized("not the admin token")


def _device(state: StateDep, credentials: Annotated[Credentials, Depends(device_scheme)]) -> Device:
    device = state.store.authenticate(_token(credentials))
    if device is None:
        raise Unauthorized("unknown or decommissioned device token")
    return device


def _device_or_admin(
    state: StateDep, credentials: Annotated[Credentials, Depends(_device_or_admin_scheme)]
) -> Device | None:
    token = _token(credentials)
    if _same(token, state.admin_token):
        return None
    device = state.store.authenticate(token)
    if device is None:
        raise Unauthorized("neither a valid device token nor the admin token")
    return device


def _registrar(state: StateDep, credentials: Annotated[Credentials, Depends(_registrar_scheme)]) -> None:
    token = _token(credentials)
    if not (_same(token, state.admin_token) or _same(token, state.bootstrap_token)):
        raise Unauthorized("neither the bootstrap token nor the admin token")


def _fleet_reader(state: StateDep, credentials: Annotated[Credentials, Depends(_fleet_scheme)]) -> None:
    if state.config.fleet_auth == "admin" and not _same(_token(credentials), state.admin_token):
        raise Unauthorized("the fleet views need the admin token here (fleet_auth: admin)")


AdminDep = Annotated[None, Depends(_admin)]
DeviceDep = Annotated[Device, Depends(_device)]
#: the device calling, or None for the admin
DeviceOrAdminDep = Annotated[Device | None, Depends(_device_or_admin)]
RegistrarDep = Annotated[None, Depends(_registrar)]
FleetReaderDep = Annotated[None, Depends(_fleet_reader)]
