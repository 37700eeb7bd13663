"""The device policy, applied for real: the S3-protocol server (moto, IAM enforced) holds devices to it."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from edgeml.bundle.approval import approval_key
from edgeml.bundle.manifest import manifest_key
from edgeml.bundle.reference_rows import reference_rows_key
from edgeml.cli import main
from edgeml.errors import StoreAccessDeniedError, UserError
from edgeml.store.policy import DEVICE_PREFIXES, device_policy
from edgeml.store.s3 import S3Store


def test_the_policy_document_grants_reads_of_bundle_prefixes_only() -> None:
    doc = device_policy("s3://edgeml/fleet-a")
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"}
    read = next(s for s in doc["Statement"] if s["Action"] == ["s3:GetObject"] and s["Effect"] == "Allow")
    assert read["Resource"] == [f"arn:aws:s3:::edgeml/fleet-a/{p}*" for p in DEVICE_PREFIXES]
    denied = [s for s in doc["Statement"] if s["Effect"] != "Allow"]
    assert denied == [
        {
            "Sid": "EdgemlDeviceNoReferenceRows",
            "Effect": "Deny",
            "Action": ["s3:GetObject"],
            "Resource": ["arn:aws:s3:::edgeml/fleet-a/bundles/*/reference.parquet*"],
        }
    ]


def test_a_local_store_has_no_policy() -> None:
    with pytest.raises(UserError, match="local folder"):
        device_policy("file:///var/lib/edgeml/store")


@pytest.fixture
def device_store(s3_server: Any) -> tuple[S3Store, S3Store]:
    """(publisher store, device store) on one prefix; the device's user holds only the device policy."""
    import boto3

    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    iam = boto3.client(
        "iam",
        endpoint_url=f"http://{s3_server.endpoint}",
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    user = f"device-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    policy = device_policy(f"s3://{s3_server.bucket}/{prefix}")
    iam.put_user_policy(UserName=user, PolicyName="edgeml-device", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    publisher = S3Store(s3_server.bucket, s3_server.settings(), prefix=prefix)
    device = S3Store(
        s3_server.bucket,
        s3_server.settings(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"]),
        prefix=prefix,
    )
    return publisher, device


def test_a_device_reads_bundles_and_writes_nothing(device_store: tuple[S3Store, S3Store]) -> None:
    publisher, device = device_store
    for prefix in DEVICE_PREFIXES:
        publisher.put(f"{prefix}thing", b"signed stuff")
        assert device.get(f"{prefix}thing") == b"signed stuff"
        assert device.stat(f"{prefix}thing").size == len(b"signed stuff")
        with pytest.raises(StoreAccessDeniedError):
            device.put(f"{prefix}thing", b"tampered")
        with pytest.raises(StoreAccessDeniedError):
            device.delete(f"{prefix}thing")
    assert publisher.get("blobs/thing") == b"signed stuff"
    publisher.put("lake/sensors/part-0.parquet", b"raw data")
    with pytest.raises(StoreAccessDeniedError):
        device.get("lake/sensors/part-0.parquet")
    with pytest.raises(StoreAccessDeniedError):
        device.put("lake/sensors/part-1.parquet", b"injected")


def test_a_device_reads_approvals_but_not_the_audit_trail(device_store: tuple[S3Store, S3Store]) -> None:
    publisher, device = device_store
    key = approval_key("pump", 3)
    for name in (key, key + ".sig"):
        publisher.put(name, b"signed approval")
        assert device.get(name) == b"signed approval"
        with pytest.raises(StoreAccessDeniedError):
            device.put(name, b"forged approval")
    assert device.keys("approvals/pump/") == [key, key + ".sig"]
    publisher.put("audit/00000001.json", b"entry")
    with pytest.raises(StoreAccessDeniedError):
        device.get("audit/00000001.json")


def test_a_device_cannot_read_the_reference_rows(device_store: tuple[S3Store, S3Store]) -> None:
    publisher, device = device_store
    rows = reference_rows_key("pump", 3, "x86-64-generic")
    for key in (rows, rows + ".sig", manifest_key("pump", 3, "x86-64-generic")):
        publisher.put(key, b"signed stuff")
    assert device.get(manifest_key("pump", 3, "x86-64-generic")) == b"signed stuff"
    for key in (rows, rows + ".sig"):
        with pytest.raises(StoreAccessDeniedError):
            device.get(key)


def test_cli_prints_the_policy(
    clean_env: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEML_STORE_URL", "s3://edgeml/fleet-a")
    assert main(["store", "policy", "--device"]) == 0
    assert json.loads(capsys.readouterr().out) == device_policy("s3://edgeml/fleet-a")
    assert main(["store", "policy"]) == 2
