"""The S3 object store: content-addressed Parquet objects under a bucket prefix (MinIO, S3).

An object appears under its key in one step: S3 makes a PUT visible only once it is whole,
and a multipart upload only once it is completed (an aborted or crashed one never is). A
key is put only if absent; the key is the sha256 of the bytes, so two writers racing on one
key (this process guards itself; another process may not) can only write the same bytes.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from minio.commonconfig import REPLACE, CopySource
from minio.error import S3Error

from lakehoused.config import S3Location
from lakehoused.errors import StoreError, StoreUnavailable
from lakehoused.s3 import FAILURES, MISSING, Bucket, Listed
from lakehoused.store.base import OBJECTS_PREFIX, ObjectInfo

PART_SIZE = 16 << 20
"""Objects larger than this go up in parts of this size (two at a time)."""
_READ_BUFFER = 1 << 20
CONTENT_TYPE = "application/vnd.apache.parquet"


class S3ObjectStore:
    """Objects under `s3://bucket/prefix/`, at `<prefix><key>`."""

    def __init__(self, location: S3Location, *, check: bool = True) -> None:
        self.bucket = Bucket(location, setting="store.url")
        self.url = location.url
        self._guard = threading.Lock()
        self._putting: dict[str, tuple[threading.Lock, int]] = {}
        if check:
            self.bucket.check()

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key.startswith(OBJECTS_PREFIX) or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"object key {key!r} is outside the store")
        if "\\" in key:
            raise StoreError(f"object key {key!r} is outside the store")
        return self.bucket.key(key)

    def _failed(self, e: BaseException, doing: str) -> StoreUnavailable:
        error = self.bucket.unavailable(e, f"{doing} in {self.url}", StoreUnavailable)
        assert isinstance(error, StoreUnavailable)
        return error

    def put(self, key: str, file: Path) -> bool:
        """Upload a finished file under `key` unless the key exists; False when it did."""
        full = self._key(key)
        lock = self._take(key)
        try:
            with lock:
                if self.stat(key) is not None:
                    self._reused(full)
                    return False
                size = Path(file).stat().st_size
                with open(file, "rb") as fh:
                    self.bucket.client.put_object(
                        self.bucket.name,
                        full,
                        fh,
                        size,
                        content_type=CONTENT_TYPE,
                        part_size=PART_SIZE,
                        num_parallel_uploads=2,
                    )
        except FAILURES as e:
            raise self._failed(e, f"put {key}") from e
        finally:
            self._give_back(key)
        return True

    def _reused(self, full: str) -> None:
        """An ingest is about to reference an existing object again: rewrite it onto itself,
        so its time is now and `gc`'s grace period covers it as it covers a new one."""
        self.bucket.client.copy_object(
            self.bucket.name,
            full,
            CopySource(self.bucket.name, full),
            metadata={"x-amz-meta-lakehoused-reused": "1"},
            metadata_directive=REPLACE,
        )

    def _take(self, key: str) -> threading.Lock:
        """The lock of one key's puts in this process (made on first use)."""
        with self._guard:
            lock, users = self._putting.get(key, (threading.Lock(), 0))
            self._putting[key] = (lock, users + 1)
            return lock

    def _give_back(self, key: str) -> None:
        with self._guard:
            lock, users = self._putting[key]
            if users == 1:
                del self._putting[key]  # the last put of this key: nothing left to guard
            else:
                self._putting[key] = (lock, users - 1)

    def open(self, key: str) -> BinaryIO:
        """The object's bytes, streamed."""
        full = self._key(key)
        try:
            response = self.bucket.client.get_object(self.bucket.name, full)
        except S3Error as e:
            if e.code in MISSING:
                raise StoreError(f"object {key} is missing from {self.url}") from None
            raise self._failed(e, f"read {key}") from e
        except FAILURES as e:
            raise self._failed(e, f"read {key}") from e
        raw = _Body(response, lambda e: self._failed(e, f"read {key}"))
        return io.BufferedReader(raw, _READ_BUFFER)  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""
        return self.stat(key) is not None

    def keys(self, prefix: str = OBJECTS_PREFIX) -> Iterator[str]:
        """Every object key under `prefix`, sorted."""
        start = len(self.bucket.prefix)
        try:
            found = [
                item.key[start:]
                for item in self.bucket.listing(self.bucket.key(prefix), recursive=True)
                if isinstance(item, Listed)
            ]
        except FAILURES as e:
            raise self._failed(e, f"list {prefix}") from e
        yield from sorted(k for k in found if k.startswith(OBJECTS_PREFIX))

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and write time, None when missing."""
        full = self._key(key)
        try:
            info = self.bucket.client.stat_object(self.bucket.name, full)
        except S3Error as e:
            if e.code in MISSING:
                return None
            raise self._failed(e, f"stat {key}") from e
        except FAILURES as e:
            raise self._failed(e, f"stat {key}") from e
        modified = info.last_modified.timestamp() if info.last_modified else 0.0
        return ObjectInfo(key, info.size or 0, modified)

    def delete(self, key: str) -> None:
        """Remove an object; missing is fine."""
        full = self._key(key)
        try:
            self.bucket.client.remove_object(self.bucket.name, full)
        except FAILURES as e:
            raise self._failed(e, f"delete {key}") from e


class _Body(io.RawIOBase):
    """An object's body from the server, read as a file; closing releases the connection."""

    def __init__(self, response, failed) -> None:
        self._response = response
        self._failed = failed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._response.read(len(buffer), decode_content=False)
        except FAILURES as e:
            raise self._failed(e) from e
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
            self._response.release_conn()
        super().close()
