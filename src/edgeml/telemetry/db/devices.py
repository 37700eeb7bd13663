"""The fleet registry: devices in the database, and a copy of them in memory.

The devices (a few thousand rows) are kept in memory (:class:`DeviceDirectory`), so device
authentication costs no query; the writer updates it after each commit. Their telemetry state
(last seen, version served, spool drops) is saved every ``DEVICE_STATE_S`` seconds rather than
in every write; after a crash it is rebuilt from the batches stored since (:func:`recover_devices`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from typing import Any

import duckdb
import pyarrow as pa

from edgeml.telemetry.db.batch_group import STAMP
from edgeml.telemetry.db.tables import from_us
from edgeml.telemetry.schema import Device

__all__ = [
    "DEVICE_COLUMNS",
    "DEVICE_STATE_S",
    "UPDATE_DEVICES",
    "DeviceDirectory",
    "device_row",
    "device_table",
    "hash_token",
    "recover_devices",
    "save_devices",
]

log = logging.getLogger("edgeml.telemetry.db")

#: seconds between saves of the devices' telemetry state (last seen, version served, drops).
#: Updating the devices table in every group's transaction cost a third of the group's
#: write; in between, the state lives in memory, and a store opened after a crash rebuilds
#: it from the batches written since the last save (``_recover_devices``).
DEVICE_STATE_S = 5.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


DEVICE_COLUMNS = """device_id, device_group, profile, model, token_sha256,
    epoch_us(registered_at), epoch_us(decommissioned_at), epoch_us(last_seen), epoch_us(last_window_end),
    serving_model, serving_version, dropped_total"""


def device_row(row: tuple[Any, ...]) -> tuple[Device, str]:
    (device_id, group, profile, model, token_hash, registered, decommissioned, seen, window_end,
     serving_model, serving_version, dropped) = row  # fmt: skip
    device = Device(
        device_id=device_id,
        group=group,
        profile=profile,
        model=model,
        registered_at=from_us(registered),
        decommissioned_at=from_us(decommissioned),
        last_seen=from_us(seen),
        last_window_end=from_us(window_end),
        serving_model=serving_model,
        serving_version=serving_version,
        dropped_total=dropped,
    )
    return device, token_hash


class DeviceDirectory:
    """The fleet registry in memory: devices by id, and the hashes of active devices' tokens.

    Thread-safe. The store keeps one in step with its database; a client of a store in another
    process keeps a copy in step with the store's answers, so a request is authenticated
    without a round trip.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, Device] = {}
        self._token_of: dict[str, str] = {}  # device id -> sha256 of its token
        self._by_token: dict[str, str] = {}  # sha256 of an active device's token -> device id

    def remember(self, device: Device, token_hash: str | None = None) -> None:
        """Add or update ``device``; a registration or a decommission names the token's hash."""
        with self._lock:
            self._devices[device.device_id] = device
            if token_hash is None:
                return
            self._token_of[device.device_id] = token_hash
            if device.active:
                self._by_token[token_hash] = device.device_id
            else:
                self._by_token.pop(token_hash, None)

    def update(self, devices: list[Device]) -> None:
        """New state of known devices (telemetry arrived); their tokens stay as they are."""
        with self._lock:
            for device in devices:
                self._devices[device.device_id] = device

    def token_hash(self, device_id: str) -> str:
        with self._lock:
            return self._token_of[device_id]

    def authenticate(self, token: str) -> Device | None:
        """The active device holding ``token``, or None."""
        presented = hash_token(token)
        with self._lock:
            device_id = self._by_token.get(presented)
            if device_id is None or not hmac.compare_digest(self._token_of[device_id], presented):
                return None
            return self._devices[device_id]

    def device(self, device_id: str) -> Device | None:
        with self._lock:
            return self._devices.get(device_id)

    def devices(self) -> list[Device]:
        """Every device ever registered, decommissioned ones included, by id."""
        with self._lock:
            return sorted(self._devices.values(), key=lambda d: d.device_id)

    def snapshot(self) -> list[tuple[Device, str]]:
        """Every device with its token's hash: what a copy starts from."""
        with self._lock:
            return [(d, self._token_of[i]) for i, d in self._devices.items()]


UPDATE_DEVICES = (
    "UPDATE devices SET last_seen = s.last_seen, last_window_end = s.last_window_end, "
    "serving_model = s.serving_model, serving_version = s.serving_version, "
    "dropped_total = s.dropped_total FROM _device_state s WHERE devices.device_id = s.device_id"
)


def recover_devices(con: duckdb.DuckDBPyConnection) -> None:
    """Bring the devices' telemetry state up to the batches stored after it was last saved.

    A batch's devices are saved every ``DEVICE_STATE_S`` and when the store closes; after a
    crash, the batches received since a device's saved ``last_seen`` hold what was lost:
    the newest arrival, the spool drops they reported, and the newest window's model.
    """
    recovered = con.execute(
        """
        UPDATE devices SET
            last_seen = late.last_seen,
            dropped_total = devices.dropped_total + late.dropped,
            last_window_end = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.window_end
                ELSE devices.last_window_end END,
            serving_model = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.model
                ELSE devices.serving_model END,
            serving_version = CASE WHEN devices.last_window_end IS NULL
                OR late.window_end >= devices.last_window_end THEN late.version
                ELSE devices.serving_version END
        FROM (
            SELECT b.device_id, max(b.received_at) AS last_seen, sum(b.dropped_before) AS dropped,
                   max(b.window_end) AS window_end, arg_max(b.model, b.window_end) AS model,
                   arg_max(b.version, b.window_end) AS version
            FROM batches b JOIN devices d ON b.device_id = d.device_id
            WHERE (d.last_seen IS NULL OR b.received_at > d.last_seen)
              AND b.received_at > (  -- prunes row groups by their min/max: saves are recent
                  SELECT CASE WHEN count(*) > count(last_seen) THEN '-infinity'::TIMESTAMPTZ
                              ELSE min(last_seen) END FROM devices)
            GROUP BY b.device_id
        ) late
        WHERE devices.device_id = late.device_id
        """
    ).fetchall()[0][0]
    if recovered:
        log.info(
            "recovered the telemetry state of %d devices from batches stored after its last save", recovered
        )


def save_devices(con: duckdb.DuckDBPyConnection, devices: list[Device]) -> None:
    """Devices' telemetry state (in the caller's transaction)."""
    _device_state = device_table(devices)
    con.execute(UPDATE_DEVICES)


def device_table(devices: list[Device]) -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array([d.device_id for d in devices], pa.string()),
            "last_seen": pa.array([d.last_seen for d in devices], STAMP),
            "last_window_end": pa.array([d.last_window_end for d in devices], STAMP),
            "serving_model": pa.array([d.serving_model for d in devices], pa.string()),
            "serving_version": pa.array([d.serving_version for d in devices], pa.int32()),
            "dropped_total": pa.array([d.dropped_total for d in devices], pa.int64()),
        }
    )
