"""The local object store: a directory of content-addressed Parquet files.

An object appears under its key in one step (a hard link, or a copy written beside it and
then linked), is made durable (fsync the file and its directory), and is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lakehoused.errors import StoreError, StoreUnavailable
from lakehoused.store.base import OBJECTS_PREFIX, ObjectInfo

# A copy from another filesystem is written here first; one older than this is a crash's.
_STALE_COPY_S = 3600


def fsync_dir(path: Path) -> None:
    """Make a rename, link or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _reused(target: Path) -> None:
    """An ingest is about to reference an existing object again: make it young, so `gc`'s
    grace period covers it as it covers a new one (an unreferenced old object is what gc
    removes)."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(target)


class LocalObjectStore:
    """Objects under a local directory, at `<root>/<key>`."""

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri()
        self._copies = self.root / ".tmp"
        if not create:
            return  # read-only use: nothing is made or cleaned up
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"object store {self.root}: {e.strerror or e}") from e
        self._remove_stale_copies()

    def path(self, key: str) -> Path:
        """The file holding `key` (the local object cache reads it in place)."""
        if not key.startswith(OBJECTS_PREFIX) or ".." in key.split("/") or "\\" in key:
            raise StoreError(f"object key {key!r} is outside the store")
        return self.root / key

    def put(self, key: str, file: Path) -> bool:
        """Link (or copy, across filesystems) a finished file under `key`, unless it exists."""
        target = self.path(key)
        if target.exists():
            _reused(target)
            return False
        try:
            if not target.parent.is_dir():
                target.parent.mkdir(parents=True, exist_ok=True)
                fsync_dir(target.parent.parent)
            try:
                os.link(file, target)  # fails if the key appeared meanwhile: never overwritten
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                self._copy_in(file, target)
            fsync_dir(target.parent)
        except FileExistsError:
            _reused(target)
            return False
        except OSError as e:
            raise StoreUnavailable(f"put {key} into {self.root}: {e.strerror or e}") from e
        return True

    def _copy_in(self, file: Path, target: Path) -> None:
        """A copy written and fsynced beside the objects, then linked: never half-visible."""
        self._copies.mkdir(exist_ok=True)
        temp = self._copies / f"{uuid.uuid4().hex}.copy"
        try:
            with open(file, "rb") as src, open(temp, "xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.link(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        """The object's bytes."""
        try:
            return open(self.path(key), "rb")
        except FileNotFoundError as e:
            raise StoreError(f"object {key} is missing from {self.root}") from e
        except OSError as e:
            raise StoreUnavailable(f"read {key} from {self.root}: {e.strerror or e}") from e

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""
        return self.path(key).is_file()

    def keys(self, prefix: str = OBJECTS_PREFIX) -> Iterator[str]:
        """Every object key under `prefix`, sorted."""
        base = self.root / OBJECTS_PREFIX
        found = []
        for dirpath, _, filenames in os.walk(base):
            here = Path(dirpath).relative_to(self.root).as_posix()
            found += [f"{here}/{name}" for name in filenames if not name.startswith(".")]
        yield from sorted(k for k in found if k.startswith(prefix))

    def stat(self, key: str) -> ObjectInfo | None:
        """Size and write time, None when missing."""
        try:
            st = self.path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        """Remove an object and make the removal durable."""
        path = self.path(key)
        path.unlink(missing_ok=True)
        if path.parent.is_dir():
            fsync_dir(path.parent)

    def _remove_stale_copies(self) -> None:
        if not self._copies.is_dir():
            return
        for path in self._copies.iterdir():
            try:
                if time.time() - path.stat().st_mtime > _STALE_COPY_S:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
