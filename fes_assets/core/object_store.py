"""The object store (MinIO, S3, moto): listing with ETags through boto3, parquet range reads
through pyarrow's S3 filesystem. Neither downloads whole objects nor needs S3 Select."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.config import Config
from pyarrow import fs as pafs

from .errors import ObjectChangedError


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime

    @property
    def path(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


_STORE_ERROR_MARKS = (
    "AWS Error",
    "Couldn't connect",
    "curlCode",
    "HTTP status",
    "timed out",
    "Timeout",
    "NoSuchKey",
    "Path does not exist",
    "Connection reset",
    "connection",
    "Unable to connect",
)


def is_store_error(error: BaseException) -> bool:
    """Whether a read failed because of the object store or the network (retry later) rather
    than because of the object's bytes (record the file as failed)."""
    if isinstance(error, ObjectChangedError):
        return True
    if not isinstance(error, OSError) or type(error).__name__ == "ArrowInvalid":
        return False
    text = str(error)
    return any(mark in text for mark in _STORE_ERROR_MARKS)


@dataclass(frozen=True)
class ObjectStoreSettings:
    """Connection settings; credentials None means the standard AWS chain."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:  # never show secrets
        return f"ObjectStoreSettings(endpoint_url={self.endpoint_url!r}, region={self.region!r})"


def _pyarrow_cannot_address(key: str) -> bool:
    # pyarrow's S3 filesystem normalises paths: `.`/`..` segments and empty ones (`a//b`, a
    # leading or trailing slash) would name another object or none.
    return any(part in ("", ".", "..") for part in key.split("/"))


class _RangedObject(io.RawIOBase):
    """A seekable, read-only view of one object through boto3 ranged GETs, for keys that
    pyarrow's filesystem cannot address."""

    def __init__(
        self, client, bucket: str, key: str, size: int | None, etag: str | None = None
    ) -> None:
        self.client, self.bucket, self.key, self.pos = client, bucket, key, 0
        self.etag = etag  # every read must find this version, or ObjectChangedError
        if size is None:
            size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        self.size = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        end = self.pos + want - 1
        kwargs = {"IfMatch": f'"{self.etag}"'} if self.etag else {}
        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{end}", **kwargs
            )["Body"].read()
        except self.client.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                raise ObjectChangedError(
                    f"s3://{self.bucket}/{self.key} changed while it was being read"
                ) from e
            raise
        buffer[: len(body)] = body
        self.pos += len(body)
        return len(body)


class ObjectStore:
    def __init__(self, settings: ObjectStoreSettings) -> None:
        self.settings = settings
        self._client = None
        self._fs: pafs.S3FileSystem | None = None
        self.requests: Counter[str] = Counter()  # boto3 calls by operation name

    @property
    def client(self):
        if self._client is None:
            s = self.settings
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=s.endpoint_url,
                region_name=s.region or "us-east-1",
                aws_access_key_id=s.access_key_id,
                aws_secret_access_key=s.secret_access_key,
                aws_session_token=s.session_token,
                config=Config(
                    # MinIO and most self-hosted endpoints only serve path-style URLs.
                    s3={"addressing_style": "path" if s.endpoint_url else "auto"},
                    retries={"mode": "adaptive", "max_attempts": 8},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
            self._client.meta.events.register("before-call.s3", self._count)
        return self._client

    def _count(self, model, **_) -> None:
        self.requests[model.name] += 1

    @property
    def filesystem(self) -> pafs.S3FileSystem:
        if self._fs is None:
            s = self.settings
            kwargs: dict = {
                "region": s.region or "us-east-1",
                "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=8),
                "connect_timeout": 10,
                "request_timeout": 60,
            }
            if s.endpoint_url:
                parsed = urlparse(s.endpoint_url)
                kwargs["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
                kwargs["scheme"] = parsed.scheme or "https"
            if s.access_key_id and s.secret_access_key:
                kwargs.update(
                    access_key=s.access_key_id,
                    secret_key=s.secret_access_key,
                    session_token=s.session_token,
                )
            self._fs = pafs.S3FileSystem(**kwargs)
        return self._fs

    def list_objects(
        self, bucket: str, prefix: str, start_after: str | None = None, page_size: int = 1000
    ) -> Iterator[list[ObjectInfo]]:
        """Pages of objects under `prefix` in key order, after `start_after` when given."""
        kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            page = self.client.list_objects_v2(**kwargs)
            items = [
                ObjectInfo(
                    bucket=bucket,
                    key=o["Key"],
                    etag=o["ETag"].strip('"'),
                    size=o["Size"],
                    last_modified=o["LastModified"],
                )
                for o in page.get("Contents", [])
            ]
            yield items
            if not page.get("IsTruncated"):
                return
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            h = self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(bucket, key, h["ETag"].strip('"'), h["ContentLength"], h["LastModified"])

    def open_parquet(
        self, bucket: str, key: str, size: int | None = None, etag: str | None = None
    ) -> pq.ParquetFile:
        """A parquet reader doing ranged GETs: footer first, then only the chunks asked for.
        With `etag`, every GET is conditional on it (ObjectChangedError otherwise), so what
        is read is exactly that version: for footers, where a few small GETs cost little."""
        if etag is not None or _pyarrow_cannot_address(key):
            handle = pa.PythonFile(_RangedObject(self.client, bucket, key, size, etag), mode="r")
        else:
            handle = self.filesystem.open_input_file(f"{bucket}/{key}")
        # INT96 timestamps as microseconds: nanoseconds would overflow outside 1677..2262.
        return pq.ParquetFile(handle, coerce_int96_timestamp_unit="us", pre_buffer=True)

    def ensure_unchanged(self, bucket: str, key: str, etag: str) -> None:
        """Raise ObjectChangedError unless the object still has `etag`: bytes read before this
        call then belong to the catalogued version."""
        now = self.head(bucket, key)
        if now is None:
            raise ObjectChangedError(f"s3://{bucket}/{key} was deleted while it was being read")
        if now.etag != etag:
            raise ObjectChangedError(f"s3://{bucket}/{key} changed while it was being read")
