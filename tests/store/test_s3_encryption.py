"""hipaa: objects written to S3/MinIO are encrypted at rest by the server when settings ask for it,
through every write path (single PUT, multipart, conditional create), checked on a real S3-protocol
server by reading back what the server says it stored."""

from __future__ import annotations

import io
import uuid
from typing import Any

import boto3
import pytest

from edgeml.audit import AuditLog
from edgeml.errors import StoreConfigError
from edgeml.store.s3 import _PART_SIZE, S3Store


def _head(s3_server: Any, store: S3Store, key: str) -> dict[str, Any]:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{s3_server.endpoint}",
        region_name="us-east-1",
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
    )
    head: dict[str, Any] = client.head_object(Bucket=store.bucket, Key=store.prefix + key)
    return head


def _store(s3_server: Any, **settings: Any) -> S3Store:
    return S3Store(s3_server.bucket, s3_server.settings(**settings), prefix=f"sse-{uuid.uuid4().hex}")


def test_every_write_is_encrypted_by_the_server_when_asked(s3_server: Any) -> None:
    store = _store(s3_server, server_side_encryption="AES256")
    store.put("lake/small.parquet", b"rows")
    store.put("lake/big.parquet", io.BytesIO(b"x" * (_PART_SIZE + 1)))  # multipart
    AuditLog(store).append("cli:alice", "keys.init", "k1")  # the audit trail's conditional create
    for key in ("lake/small.parquet", "lake/big.parquet", "audit/000000000001.json"):
        assert _head(s3_server, store, key).get("ServerSideEncryption") == "AES256", key
    assert store.get("lake/small.parquet") == b"rows"  # transparent to readers


def test_nothing_is_asked_by_default(s3_server: Any) -> None:
    store = _store(s3_server)
    store.put("lake/plain.parquet", b"rows")
    assert "ServerSideEncryption" not in _head(s3_server, store, "lake/plain.parquet")


def test_kms_with_a_named_key(s3_server: Any) -> None:
    store = _store(s3_server, server_side_encryption="aws:kms", kms_key_id="alias/edgeml")
    store.put("lake/k.parquet", b"rows")
    head = _head(s3_server, store, "lake/k.parquet")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/edgeml")


def test_kms_without_a_key_is_refused_at_open(s3_server: Any) -> None:
    with pytest.raises(StoreConfigError, match="kms_key_id"):
        _store(s3_server, server_side_encryption="aws:kms")
