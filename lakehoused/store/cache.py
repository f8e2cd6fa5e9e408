"""The object cache: the local files the query engine reads for object keys.

The engine never talks to a store: it reads local Parquet files, and only under the
cache's root (its sandbox allows nothing else, and never the network). For the local store
the objects are those files already. A remote store keeps a read-through copy of each
object the views read: objects are immutable and content-addressed, so a copy is never
stale, and each download is checked against the sha256 its key names.

The copy is bounded by `store.cache_size`. Eviction never breaks a view: the objects the
current views read (the last `fill`) are never evicted, nor those of earlier views for a
grace period (a query that began on them may still be reading). Only the process that
serves the views evicts; `lakehoused sql` and `lakehoused ingest` beside it only add.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from lakehoused.errors import StoreError
from lakehoused.store.base import OBJECTS_PREFIX, ObjectInfo, ObjectStore
from lakehoused.store.local import LocalObjectStore, fsync_dir

log = logging.getLogger("lakehoused")

_CHUNK = 1 << 20
_STALE_DOWNLOAD_S = 3600


class ObjectCache(Protocol):
    """Local files for object keys, under one root the query engine may read."""

    root: Path
    """The directory holding `datasets/…` files; the engine's only readable place."""

    writer: ObjectStore
    """The store ingest puts objects through (a remote store's puts also fill the cache)."""

    def path(self, key: str) -> Path:
        """A local file holding the object's bytes (fetched first if need be)."""

    def fill(self, keys: Iterable[str]) -> None:
        """Make these objects local now: they are what the views read (never evicted)."""


class LocalFiles:
    """The local store's objects, read in place."""

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        self.root = store.root
        self.writer: ObjectStore = store

    def path(self, key: str) -> Path:
        """The object's own file."""
        return self.store.path(key)

    def fill(self, keys: Iterable[str]) -> None:
        """Nothing to fetch: the files are here."""


class ReadThroughCache:
    """Local copies of a remote store's objects under `root`, at most `capacity` bytes.

    `grace_s` is how long objects of replaced views are kept (a query's time limit);
    `evicts` is False in processes that do not serve the views.
    """

    def __init__(
        self,
        store: ObjectStore,
        root: Path,
        *,
        capacity: int,
        grace_s: float = 60.0,
        evicts: bool = True,
    ) -> None:
        self.store = store
        self.root = Path(root)
        self.capacity = capacity
        self.grace_s = grace_s
        self.evicts = evicts
        self.writer: ObjectStore = _Seeding(store, self)
        self._downloads = self.root / ".tmp"
        self._lock = threading.Lock()  # the entries and the live sets
        self._fetching = threading.Lock()  # one download at a time
        self._sizes: OrderedDict[str, int] = OrderedDict()  # key -> bytes, least recent first
        self._live: set[str] = set()
        self._kept_until: dict[str, float] = {}  # keys of replaced views -> end of grace
        self._over_warned = False
        try:
            (self.root / OBJECTS_PREFIX).mkdir(parents=True, exist_ok=True)
            self._downloads.mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"object cache {self.root}: {e.strerror or e}; the state directory must be writable"
            ) from e
        self._load()

    @property
    def size(self) -> int:
        """Bytes held now."""
        with self._lock:
            return sum(self._sizes.values())

    def local(self, key: str) -> Path:
        """Where `key` is (or would be) held."""
        parts = key.split("/")
        if not key.startswith(OBJECTS_PREFIX) or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"object key {key!r} is outside the store")
        return self.root / key

    def path(self, key: str) -> Path:
        """The local copy of `key`, downloaded (and checked) first if it is not here."""
        local = self.local(key)
        with self._lock:
            if key not in self._live:
                # Read outside the current views (an older version, a rewrite): kept for
                # the grace period all the same, as its reader may still be at it.
                self._kept_until[key] = time.monotonic() + self.grace_s
            if key in self._sizes and local.is_file():
                self._sizes.move_to_end(key)
                return local
        with self._fetching:
            with self._lock:
                if key in self._sizes and local.is_file():  # fetched by another thread
                    return local
            size = local.stat().st_size if local.is_file() else self._download(key, local)
        self._add(key, size)
        return local

    def fill(self, keys: Iterable[str]) -> None:
        """Fetch what is missing; from now on these are the objects the views read."""
        wanted = list(dict.fromkeys(keys))
        now = time.monotonic()
        with self._lock:
            for key in self._live.difference(wanted):
                self._kept_until[key] = now + self.grace_s
            self._live = set(wanted)
            for key in wanted:
                self._kept_until.pop(key, None)
        for key in wanted:
            self.path(key)
        self._evict()

    def seed(self, key: str, file: Path) -> None:
        """Hold a copy of a file just put under `key` (its sha256 was computed by ingest)."""
        local = self.local(key)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(file, local)  # the converted file itself: no bytes copied
        except FileExistsError:
            pass
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            temp = self._temp()
            try:
                shutil.copyfile(file, temp)
                self._publish(temp, local)
            finally:
                temp.unlink(missing_ok=True)
        self._add(key, local.stat().st_size)

    # -- internals ---------------------------------------------------------------------

    def _download(self, key: str, local: Path) -> int:
        """Copy the object into a temp file, check its sha256, then link it into place."""
        expected = Path(key).stem  # datasets/<name>/<sha256>.parquet
        digest = hashlib.sha256()
        temp = self._temp()
        try:
            with self.store.open(key) as src, open(temp, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            if digest.hexdigest() != expected:
                raise StoreError(
                    f"object {key} in {self.store.url} holds bytes with sha256 "
                    f"{digest.hexdigest()}, not the {expected} its key names; run "
                    "`lakehoused verify`"
                )
            local.parent.mkdir(parents=True, exist_ok=True)
            self._publish(temp, local)
            return local.stat().st_size
        finally:
            temp.unlink(missing_ok=True)

    def _publish(self, temp: Path, local: Path) -> None:
        # A link, never a rename over: the engine may be reading a file already there.
        with contextlib.suppress(FileExistsError):
            os.link(temp, local)
        fsync_dir(local.parent)

    def _temp(self) -> Path:
        return self._downloads / f"{uuid.uuid4().hex}.part"

    def _add(self, key: str, size: int) -> None:
        with self._lock:
            self._sizes[key] = size
            self._sizes.move_to_end(key)

    def _evict(self) -> None:
        """Remove the least recently used copies no view may read, down to the capacity."""
        if not self.evicts:
            return
        now = time.monotonic()
        removed: list[str] = []
        with self._lock:
            total = sum(self._sizes.values())
            for key in list(self._sizes):
                if total <= self.capacity:
                    break
                if key in self._live or self._kept_until.get(key, 0) > now:
                    continue
                total -= self._sizes.pop(key)
                self._kept_until.pop(key, None)
                removed.append(key)
            over = total > self.capacity
        for key in removed:
            self.local(key).unlink(missing_ok=True)
        if over and not self._over_warned:
            self._over_warned = True
            log.warning(
                "the object cache %s holds %d bytes, over store.cache_size (%d bytes): the "
                "views read that much; raise store.cache_size",
                self.root,
                total,
                self.capacity,
            )
        elif not over:
            self._over_warned = False

    def _load(self) -> None:
        """Count the copies an earlier run left, least recently used first."""
        found = []
        base = self.root / OBJECTS_PREFIX
        for path in _files(base):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = path.relative_to(self.root).as_posix()
            found.append((st.st_atime, key, st.st_size))
        for _, key, size in sorted(found):
            self._sizes[key] = size
        for path in self._downloads.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > _STALE_DOWNLOAD_S:
                    path.unlink()


def _files(base: Path) -> Iterator[Path]:
    for dirpath, _, filenames in os.walk(base):
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


class _Seeding:
    """The store as ingest writes it: each put also leaves a copy in the cache, so a new
    version is queryable without downloading back what was just uploaded."""

    def __init__(self, store: ObjectStore, cache: ReadThroughCache) -> None:
        self._store = store
        self._cache = cache
        self.url = store.url

    def put(self, key: str, file: Path) -> bool:
        """Put, then keep a copy."""
        put = self._store.put(key, file)
        self._cache.seed(key, file)
        return put

    def open(self, key: str) -> BinaryIO:
        """The object's bytes, from the store."""
        return self._store.open(key)

    def exists(self, key: str) -> bool:
        """Whether the store holds `key`."""
        return self._store.exists(key)

    def keys(self, prefix: str = OBJECTS_PREFIX) -> Iterator[str]:
        """The store's keys."""
        return self._store.keys(prefix)

    def stat(self, key: str) -> ObjectInfo | None:
        """The store's facts of `key`."""
        return self._store.stat(key)

    def delete(self, key: str) -> None:
        """Delete from the store."""
        self._store.delete(key)


def open_cache(
    store: ObjectStore,
    root: Path,
    *,
    capacity: int,
    grace_s: float = 60.0,
    evicts: bool = True,
) -> ObjectCache:
    """The cache that suits the store: its own files, or a read-through copy under `root`."""
    if isinstance(store, LocalObjectStore):
        return LocalFiles(store)
    return ReadThroughCache(store, root, capacity=capacity, grace_s=grace_s, evicts=evicts)
