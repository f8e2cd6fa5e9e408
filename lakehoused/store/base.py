"""The object store protocol and what every backend shares: keys, object facts, hashing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

OBJECTS_PREFIX = "datasets/"
"""Every object key starts with this."""

_CHUNK = 1 << 20


def object_key(dataset: str, sha256: str) -> str:
    """The content address of an object: `datasets/<name>/<sha256>.parquet`."""
    return f"{OBJECTS_PREFIX}{dataset}/{sha256}.parquet"


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one object without reading it."""

    key: str
    size: int
    modified: float  # seconds since the epoch, when it was written


class ObjectStore(Protocol):
    """Where objects live. A key, once written, always holds the same bytes."""

    url: str
    """Where the store is, for messages (never a secret)."""

    def put(self, key: str, file: Path) -> bool:
        """Put a finished local file under `key` unless the key exists; False when it did.

        A partial put is never visible under `key`.
        """

    def open(self, key: str) -> BinaryIO:
        """The object's bytes, streamed; StoreError when it is missing."""

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""

    def keys(self, prefix: str = OBJECTS_PREFIX) -> Iterator[str]:
        """Every object key under `prefix`, sorted."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and write time of an object, None when it is missing."""

    def delete(self, key: str) -> None:
        """Remove an object (only gc does, and only unreferenced ones); missing is fine."""


def object_sha256(store: ObjectStore, key: str) -> str:
    """sha256 of an object's bytes, streamed (bounded memory whatever its size)."""
    digest = hashlib.sha256()
    with store.open(key) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
