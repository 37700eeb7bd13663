"""An object store on MinIO or any S3-protocol server, through the ``minio`` SDK.

Every object carries its sha256 as user metadata (``x-amz-meta-sha256``), computed
while the upload is spooled, so :meth:`stat` can return it without reading content.
SDK and network errors become edgeml errors that say which setting to check; the
original exception stays attached as ``__cause__``.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import check_bucket_name
from minio.sse import Sse, SseKMS, SseS3

from edgeml.errors import (
    BucketNotFoundError,
    ObjectExistsError,
    ObjectNotFoundError,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreError,
    StoreUnreachableError,
)
from edgeml.store.base import CHUNK_SIZE, ObjectInfo, ObjectStore

if TYPE_CHECKING:
    from edgeml.settings import S3Settings

__all__ = ["S3Store", "parse_endpoint"]

_SHA_META = "sha256"
#: S3 error codes of a conditional write that found the key taken (the second: a concurrent one)
_TAKEN = ("PreconditionFailed", "ConditionalRequestConflict")
_SPOOL_IN_MEMORY = 16 * 1024 * 1024
_PART_SIZE = 16 * 1024 * 1024
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}


def parse_endpoint(raw: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` and TLS flag from ``host:port`` or ``http(s)://host:port``."""
    if "://" not in raw:
        return raw.rstrip("/"), secure
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StoreConfigError(f"S3 endpoint {raw!r} must be host:port or http(s)://host:port")
    return parts.netloc, parts.scheme == "https"


def _server_side_encryption(s: S3Settings) -> Sse | None:
    """What every write asks the server to encrypt with (``server_side_encryption``)."""
    if s.server_side_encryption == "AES256":
        return SseS3()
    if s.server_side_encryption == "aws:kms":
        if not s.kms_key_id:
            raise StoreConfigError(
                "store.s3.server_side_encryption is aws:kms but no kms_key_id names the key",
                hint="set store.s3.kms_key_id, or use AES256 (the server's own keys)",
            )
        return SseKMS(s.kms_key_id, {})
    return None


class S3Store(ObjectStore):
    """Objects in ``bucket`` under an optional key ``prefix``."""

    backend = "s3"

    def __init__(
        self, bucket: str, settings: S3Settings, *, prefix: str = "", client: Minio | None = None
    ) -> None:
        if not bucket:
            raise StoreConfigError("an s3:// store URL must name a bucket: s3://BUCKET[/prefix]")
        try:
            check_bucket_name(bucket)
        except ValueError as exc:
            raise StoreConfigError(
                f"{bucket!r} is not a valid S3 bucket name: {exc}",
                hint="bucket names are 3-63 characters: lowercase letters, digits, '.' and '-'",
            ) from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint, secure = parse_endpoint(settings.endpoint, settings.secure)
        self._settings = settings
        self._client = client or self._make_client(settings, secure)
        self._secure = secure
        self._bucket_checked = False
        self._lock = threading.Lock()
        self._sse = _server_side_encryption(settings)

    def _make_client(self, s: S3Settings, secure: bool) -> Minio:
        # Our own pool: bounded timeouts and retries, so a dead endpoint fails in seconds.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=s.timeout_s, read=s.timeout_s),
            retries=urllib3.Retry(total=s.retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=10,
            cert_reqs="CERT_REQUIRED" if s.verify_tls else "CERT_NONE",
            ca_certs=str(s.ca_file) if s.ca_file else None,
        )
        return Minio(
            self.endpoint,
            access_key=s.access_key.get_secret_value() if s.access_key else None,
            secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
            secure=secure,
            region=s.region,
            http_client=http,
            cert_check=s.verify_tls,
        )

    @property
    def settings(self) -> S3Settings:
        """The endpoint, credentials and TLS settings this store was opened with."""
        return self._settings

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    # Errors -----------------------------------------------------------------

    def _fail(self, exc: Exception, key: str | None = None) -> NoReturn:
        where = f"{'https' if self._secure else 'http'}://{self.endpoint}"
        if isinstance(exc, S3Error):
            if exc.code in ("NoSuchKey", "NoSuchObject") and key is not None:
                raise ObjectNotFoundError(key, where=self.url) from exc
            if exc.code == "NoSuchBucket":
                raise BucketNotFoundError(
                    f"bucket {self.bucket!r} does not exist on {where}",
                    hint="create it (mc mb, or the Ansible minio role) or fix the store URL",
                ) from exc
            if exc.code in _DENIED:
                raise StoreAccessDeniedError(
                    f"{where} refused access to bucket {self.bucket!r} ({exc.code}: {exc.message})",
                    hint="check store.s3.access_key / secret_key (EDGEML_S3_ACCESS_KEY, "
                    "EDGEML_S3_SECRET_KEY) and the user's policy",
                ) from exc
            raise StoreError(f"S3 error on {self.url}: {exc.code}: {exc.message}") from exc
        if isinstance(exc, urllib3.exceptions.SSLError):
            raise StoreConfigError(
                f"TLS handshake with {where} failed: {exc}",
                hint="check store.s3.secure, verify_tls and ca_file",
            ) from exc
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            raise StoreUnreachableError(
                f"cannot reach the S3 endpoint {where}: {type(exc).__name__}",
                hint="check store.s3.endpoint (EDGEML_S3_ENDPOINT) and that the server is running",
            ) from exc
        if isinstance(exc, InvalidResponseError):
            raise StoreConfigError(
                f"{where} did not answer like an S3 server (HTTP {exc._code})",
                hint="check store.s3.endpoint points at MinIO/S3, and secure matches its scheme",
            ) from exc
        if isinstance(exc, ServerError):
            raise StoreError(f"S3 server error on {where}: {exc}") from exc
        raise StoreError(f"S3 request to {where} failed: {exc}") from exc

    def _ready(self) -> Minio:
        """The client, after checking once that the endpoint speaks S3 and the bucket exists.

        Checked lazily, not in ``__init__``: opening a store does no network I/O. The check
        lists (one page of) the store's prefix rather than HEAD-ing the bucket: a HEAD
        carries no body, so any web server answering 200 would pass for S3 (and then
        "store" objects nowhere), and one answering 404 would pass for a missing bucket.
        A listing must come back as S3 XML, and S3 errors carry their code (NoSuchBucket,
        InvalidAccessKeyId, ...), which becomes the ``__cause__`` of the edgeml error.
        """
        if not self._bucket_checked:
            with self._lock:
                if not self._bucket_checked:
                    objects = self._client.list_objects(self.bucket, prefix=self.prefix or None)
                    try:
                        next(objects, None)
                    except S3Error as exc:
                        # A user limited to some prefixes (a device) may not list the root; the
                        # refusal is S3 XML all the same, and each operation reports its own denial.
                        if exc.code != "AccessDenied":
                            self._fail(exc)
                    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                        self._fail(exc)
                    except (ValueError, ParseError) as exc:  # a 200 reply that is not S3 XML
                        where = f"{'https' if self._secure else 'http'}://{self.endpoint}"
                        raise StoreConfigError(
                            f"{where} did not answer like an S3 server (its reply to a bucket "
                            "listing is not S3 XML)",
                            hint="check store.s3.endpoint points at MinIO/S3, not another web server",
                        ) from exc
                    finally:
                        objects.close()
                    self._bucket_checked = True
        return self._client

    def _call(self, key: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
        client = self._ready()
        try:
            return fn(client, *args, **kwargs)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._fail(exc, key)

    # Primitives -------------------------------------------------------------

    def _put(self, key: str, stream: BinaryIO, content_type: str | None) -> ObjectInfo:
        # Spool first: S3 wants the length up front and we want the sha256 in the metadata.
        digest = hashlib.sha256()
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            size = 0
            while chunk := stream.read(CHUNK_SIZE):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
            sha = digest.hexdigest()
            result = self._call(
                key,
                Minio.put_object,
                self.bucket,
                self.prefix + key,
                spool,
                size,
                content_type=content_type or "application/octet-stream",
                metadata={_SHA_META: sha},
                part_size=_PART_SIZE,
                sse=self._sse,
            )
        return ObjectInfo(key=key, size=size, sha256=sha, etag=result.etag, modified=None)

    def _create(self, key: str, data: bytes, content_type: str | None) -> ObjectInfo:
        # S3's conditional write (If-None-Match: *; MinIO and AWS S3 both honour it). minio-py's
        # put_object would send the header as user metadata, so this is its single-request PUT.
        sha = hashlib.sha256(data).hexdigest()
        headers = {
            "Content-Type": content_type or "application/octet-stream",
            f"x-amz-meta-{_SHA_META}": sha,
            "If-None-Match": "*",
            **(self._sse.headers() if self._sse else {}),
        }
        try:
            result = self._call(key, Minio._put_object, self.bucket, self.prefix + key, data, headers)
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in _TAKEN:
                raise ObjectExistsError(key, where=self.url) from cause
            raise
        return ObjectInfo(key=key, size=len(data), sha256=sha, etag=result.etag, modified=None)

    def _open(self, key: str, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
        if offset > 0 or length is not None:
            # A range past the end is an error in S3 (InvalidRange), even bytes=0-N on an
            # empty object; the contract is to yield nothing, so check the size first.
            size = self._stat(key).size  # also raises ObjectNotFoundError for a missing key
            if length == 0 or offset >= size:
                return iter(())
        response = self._call(
            key, Minio.get_object, self.bucket, self.prefix + key, offset=offset, length=length or 0
        )
        return self._chunks(response, key, chunk_size)

    def _chunks(self, response: Any, key: str, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._fail(exc, key)
        finally:
            response.close()
            response.release_conn()

    def _stat(self, key: str) -> ObjectInfo:
        obj = self._call(key, Minio.stat_object, self.bucket, self.prefix + key)
        meta = {k.lower(): v for k, v in (obj.metadata or {}).items()}
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            sha256=meta.get(f"x-amz-meta-{_SHA_META}"),
            etag=obj.etag,
            modified=obj.last_modified,
        )

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        objects = self._call(
            None, Minio.list_objects, self.bucket, prefix=self.prefix + prefix, recursive=True
        )
        return self._listing(objects)

    def _listing(self, objects: Iterator[Any]) -> Iterator[ObjectInfo]:
        cut = len(self.prefix)
        try:
            for obj in objects:  # the SDK pages lazily: errors surface while iterating
                if obj.is_dir:
                    continue
                yield ObjectInfo(
                    key=obj.object_name[cut:],
                    size=int(obj.size or 0),
                    sha256=None,
                    etag=obj.etag,
                    modified=obj.last_modified,
                )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._fail(exc)

    def _delete(self, key: str) -> None:
        self._call(key, Minio.remove_object, self.bucket, self.prefix + key)
