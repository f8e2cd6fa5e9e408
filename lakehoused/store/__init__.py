"""Object stores: immutable, content-addressed Parquet objects behind one small protocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from lakehoused.store.local import LocalObjectStore, TempObject


def object_key(dataset: str, sha256: str) -> str:
    """The content address of an object: `datasets/<name>/<sha256>.parquet`."""
    return f"datasets/{dataset}/{sha256}.parquet"


class ObjectStore(Protocol):
    """Where objects live. A key, once written, always holds the same bytes."""

    def new_temp(self) -> TempObject:
        """A locked temporary file on local disk for a conversion to write into."""

    def put(self, key: str, temp: TempObject) -> bool:
        """Put a finished temp file under `key`; False when the key already existed (reused)."""

    def ingests_in_flight(self) -> int:
        """How many conversions are writing or committing right now (gc waits for them)."""

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""

    def local_path(self, key: str) -> Path:
        """A local file the query engine can read for `key`."""

    def sha256(self, key: str) -> str:
        """The sha256 of the bytes stored under `key` (verify uses it)."""

    def object_keys(self) -> Iterator[str]:
        """Every object key in the store."""

    def age_s(self, key: str) -> float:
        """Seconds since the object was written (gc's grace period)."""

    def delete(self, key: str) -> None:
        """Remove an object (only gc does, and only unreferenced ones)."""

    def remove_stale_temps(self, grace_s: float) -> list[str]:
        """Remove temp files no live ingest holds and older than `grace_s`; return their names."""


__all__ = ["LocalObjectStore", "ObjectStore", "TempObject", "object_key"]
