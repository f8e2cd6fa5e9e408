"""The object cache: the local files the query engine reads for object keys.

The engine never talks to a store: it reads local Parquet files, and only under the
cache's root (its sandbox allows nothing else). For the local store the objects are those
files already; a remote store keeps a read-through copy (objects are immutable and
content-addressed, so a copy is never stale).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from lakehoused.store.local import LocalObjectStore


class ObjectCache(Protocol):
    """Local files for object keys, under one root the query engine may read."""

    root: Path
    """The directory holding `datasets/…` files; the engine's only readable place."""

    def path(self, key: str) -> Path:
        """A local file holding the object's bytes (fetched first if need be)."""

    def fill(self, keys: Iterable[str]) -> None:
        """Make these objects local now, before a view reads them."""


class LocalFiles:
    """The local store's objects, read in place."""

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        self.root = store.root

    def path(self, key: str) -> Path:
        """The object's own file."""
        return self.store.path(key)

    def fill(self, keys: Iterable[str]) -> None:
        """Nothing to fetch: the files are here."""


def open_cache(store: object) -> ObjectCache:
    """The cache that suits the store."""
    if isinstance(store, LocalObjectStore):
        return LocalFiles(store)
    raise TypeError(f"no object cache for {type(store).__name__}")
