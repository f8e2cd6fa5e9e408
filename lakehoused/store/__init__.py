"""Object stores: immutable, content-addressed Parquet objects behind one small protocol.

The protocol (base.py) speaks only of keys and finished files: no temp files, locks or
local paths (those belong to ingest). `open_store` picks the backend from the config's path
or URL: a local directory (local.py) or a bucket prefix (s3.py). The query engine reads
objects through an `ObjectCache` (cache.py).
"""

from __future__ import annotations

from lakehoused.config import StoreConfig
from lakehoused.store.base import (
    OBJECTS_PREFIX,
    ObjectInfo,
    ObjectStore,
    object_key,
    object_sha256,
)
from lakehoused.store.local import LocalObjectStore
from lakehoused.store.s3 import S3ObjectStore


def open_store(config: StoreConfig, *, read_only: bool = False) -> ObjectStore:
    """The store the config names: a local directory (`path`) or a bucket prefix (`url`).

    A bucket is checked at once (reachable, keys accepted, bucket there) unless read-only:
    a misconfigured daemon fails at start with one line naming the setting, while a
    read-only command that never reads an object (`datasets`, `log`) needs no server.
    """
    if config.s3 is not None:
        return S3ObjectStore(config.s3, check=not read_only)
    assert config.path is not None
    return LocalObjectStore(config.path, create=not read_only)


__all__ = [
    "OBJECTS_PREFIX",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "object_key",
    "object_sha256",
    "open_store",
]
