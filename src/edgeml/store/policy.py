"""S3 / MinIO access policies: what a device may touch in the appliance's store.

The publisher writes; devices read. A device may read (``GetObject``, which also
covers ``HEAD``) and list only the prefixes bundles and their approvals live under — never the lake,
the catalog or anything else — and may write nothing. The reference rows published next to a
manifest for the central node's NannyML (holdout rows with their targets) are denied too. The
document is standard IAM policy JSON, which MinIO (``mc admin policy create``) and S3 both take
as is.
"""

from __future__ import annotations

from typing import Any

from edgeml.errors import UserError

__all__ = ["DEVICE_PREFIXES", "device_policy"]

#: what a device reads: content-addressed blobs, signed manifests, signed channel pointers, and the
#: signed approvals a device checks before following ``stable`` under sox (:mod:`edgeml.bundle.approval`)
DEVICE_PREFIXES = ("blobs/", "bundles/", "channels/", "approvals/")
#: file name of a version's reference rows (:func:`edgeml.bundle.reference_rows.reference_rows_key`)
REFERENCE_ROWS = "reference.parquet"


def device_policy(store_url: str) -> dict[str, Any]:
    """The read-only device policy for an ``s3://BUCKET[/prefix]`` store."""
    if not store_url.startswith("s3://"):
        raise UserError(
            f"the store {store_url} is a local folder; device policies are for S3/MinIO stores",
            hint="set store.url (EDGEML_STORE_URL) to s3://BUCKET[/prefix]",
        )
    bucket, _, prefix = store_url.removeprefix("s3://").partition("/")
    base = prefix.strip("/") + "/" if prefix.strip("/") else ""
    objects = [f"arn:aws:s3:::{bucket}/{base}{p}*" for p in DEVICE_PREFIXES]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EdgemlDeviceReadBundles",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": objects,
            },
            {
                "Sid": "EdgemlDeviceListBundles",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [f"{base}{p}*" for p in DEVICE_PREFIXES]}},
            },
            {
                "Sid": "EdgemlDeviceNoReferenceRows",
                "Effect": "Deny",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/{base}bundles/*/{REFERENCE_ROWS}*"],
            },
            {
                "Sid": "EdgemlDeviceBucketLocation",
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
        ],
    }
