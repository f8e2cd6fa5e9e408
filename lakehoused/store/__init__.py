"""Object stores: immutable, content-addressed Parquet objects behind one small protocol.

The protocol (base.py) speaks only of keys and finished files: no temp files, locks or
local paths (those belong to ingest). `open_store` picks the backend from the config's path
or URL. The query engine reads objects through an `ObjectCache` (cache.py).
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


def open_store(config: StoreConfig, *, read_only: bool = False) -> ObjectStore:
    """The store the config names: a local directory (`path`)."""
    return LocalObjectStore(config.path, create=not read_only)


__all__ = [
    "OBJECTS_PREFIX",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "object_key",
    "object_sha256",
    "open_store",
]
