"""Registration and device auth: tokens shown once, checked on every call, revoked at once."""

from __future__ import annotations

from edgeml.telemetry.db.devices import hash_token
from telemetry.batches import make_batch

from .conftest import ADMIN, BOOTSTRAP, Central, bearer


def test_registration_needs_the_bootstrap_or_admin_token(central: Central) -> None:
    body = {"device_id": "dev-1", "group": "line-a", "profile": "x86-64-generic", "model": "pump"}
    assert central.client.post("/v1/devices", json=body).status_code == 401
    refused = central.client.post("/v1/devices", json=body, headers=bearer("nope"))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"

    made = central.client.post("/v1/devices", json=body, headers=bearer(BOOTSTRAP))
    assert made.status_code == 201
    device, token = made.json()["device"], made.json()["token"]
    assert device["device_id"] == "dev-1"
    assert device["group"] == "line-a"
    assert len(token) >= 40
    # stored hashed: the token itself is in no column of the devices table
    rows = central.store.fetch("SELECT * FROM devices")
    values = [str(v) for row in rows for v in row]
    assert token not in values
    assert hash_token(token) in values


def test_ids_are_made_when_not_given_and_never_reused(central: Central) -> None:
    body = {"profile": "x86-64-generic", "model": "pump"}
    first = central.client.post("/v1/devices", json=body, headers=bearer(ADMIN)).json()
    second = central.client.post("/v1/devices", json=body, headers=bearer(ADMIN)).json()
    assert first["device"]["device_id"] != second["device"]["device_id"]
    assert first["token"] != second["token"]
    again = central.client.post(
        "/v1/devices", json=body | {"device_id": first["device"]["device_id"]}, headers=bearer(BOOTSTRAP)
    )
    assert again.status_code == 409


def test_listing_devices_is_for_admins(central: Central) -> None:
    central.register("dev-1")
    token = central.register("dev-2", group="line-b")
    for headers in ({}, bearer(BOOTSTRAP), bearer(token)):
        assert central.client.get("/v1/devices", headers=headers).status_code == 401
    listed = central.client.get("/v1/devices", headers=bearer(ADMIN))
    assert [d["device_id"] for d in listed.json()] == ["dev-1", "dev-2"]
    assert all("token" not in key for d in listed.json() for key in d)


def test_telemetry_auth_no_token_wrong_token_other_device(central: Central) -> None:
    token_a = central.register("dev-a")
    central.register("dev-b")
    batch = make_batch("dev-a")
    no_token = central.client.post("/v1/telemetry", content=batch.model_dump_json())
    assert no_token.status_code == 401
    assert central.post(batch, "wrong").status_code == 401
    assert central.post(batch, ADMIN).status_code == 401  # the admin is no device
    as_b = central.post(make_batch("dev-b"), token_a)
    assert as_b.status_code == 403
    assert "dev-a" in as_b.json()["detail"]
    assert central.post(batch, token_a).status_code == 200
    assert [b.device_id for b in central.store.batches()] == ["dev-a"]


def test_a_decommissioned_token_stops_working_at_once(central: Central) -> None:
    token = central.register("dev-1")
    assert central.post(make_batch(), token).status_code == 200
    assert central.client.post("/v1/devices/dev-1/decommission", headers=bearer(BOOTSTRAP)).status_code == 401
    retired = central.client.post("/v1/devices/dev-1/decommission", headers=bearer(ADMIN))
    assert retired.status_code == 200
    assert retired.json()["decommissioned_at"] is not None
    # the very next call is refused, on every route the token opened
    assert central.post(make_batch(), token).status_code == 401
    assert central.client.get("/v1/targets/dev-1", headers=bearer(token)).status_code == 401
    feedback = {"labels": [{"prediction_id": "p1", "label": "ok"}]}
    assert central.client.post("/v1/feedback", json=feedback, headers=bearer(token)).status_code == 401
    # repeating changes nothing; an unknown device is 404
    again = central.client.post("/v1/devices/dev-1/decommission", headers=bearer(ADMIN))
    assert again.json()["decommissioned_at"] == retired.json()["decommissioned_at"]
    assert central.client.post("/v1/devices/nobody/decommission", headers=bearer(ADMIN)).status_code == 404
    # and the id stays taken
    body = {"device_id": "dev-1", "profile": "x86-64-generic", "model": "pump"}
    assert central.client.post("/v1/devices", json=body, headers=bearer(ADMIN)).status_code == 409
