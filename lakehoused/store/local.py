"""The local object store: a directory of content-addressed Parquet files.

Objects are written atomically (temp file, fsync, rename, fsync the directory) and never
overwritten. Temp files live in `<root>/.tmp/`; each is locked (flock) by the ingest that
writes it, so a cleanup can tell a live conversion from one a crash left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from lakehoused.errors import StoreError

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TempObject:
    """A temporary file that an ingest holds a lock on until the object is put or abandoned."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def finish(self) -> tuple[str, int]:
        """fsync what a writer put in the file; return its (sha256, size)."""
        if self._fd is None:
            raise StoreError(f"temp file {self.path.name} was already released")
        os.fsync(self._fd)
        return file_sha256(self.path), self.path.stat().st_size

    def release(self) -> None:
        """Drop the lock and remove the file if it is still there (an abandoned conversion)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.close()

    def close(self) -> None:
        """Drop the lock, keeping whatever is at the path."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TempObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LocalObjectStore:
    """Objects under a local directory, at `<root>/<key>`."""

    def __init__(self, root: Path, *, temp_grace_s: float = 0.0) -> None:
        self.root = Path(root)
        self.temp_dir = self.root / ".tmp"
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        # A crash between convert and put leaves a temp file; nobody holds its lock any more.
        self.remove_stale_temps(temp_grace_s)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents or not key.startswith("datasets/"):
            raise StoreError(f"object key {key!r} is outside the store")
        return path

    def new_temp(self) -> TempObject:
        """A locked temp file beside the objects (same filesystem, so the put is a rename)."""
        return TempObject(self.temp_dir / f"{uuid.uuid4().hex}.parquet.tmp")

    def put(self, key: str, temp: TempObject) -> bool:
        """Link the finished temp file under `key`; an existing key is kept as it is.

        The temp file stays (locked) until the caller releases it after the event is
        appended, so gc can see that an ingest is in flight and leave its object alone.
        """
        target = self._path(key)
        if target.exists():
            return False
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(target.parent.parent)
        # link() fails if the key appeared meanwhile: an object is never overwritten.
        try:
            os.link(temp.path, target)
        except FileExistsError:
            return False
        fsync_dir(target.parent)
        return True

    def ingests_in_flight(self) -> int:
        """How many temp files a live ingest holds locked right now."""
        return sum(1 for path in self.temp_dir.glob("*.tmp") if _is_locked(path))

    def exists(self, key: str) -> bool:
        """Whether `key` holds an object."""
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path:
        """The object's file (DuckDB reads it directly)."""
        return self._path(key)

    def sha256(self, key: str) -> str:
        """sha256 of the stored bytes."""
        try:
            return file_sha256(self._path(key))
        except FileNotFoundError as e:
            raise StoreError(f"object {key} is missing from {self.root}") from e

    def object_keys(self) -> Iterator[str]:
        """Every object key, in a stable order."""
        base = self.root / "datasets"
        if not base.is_dir():
            return
        for path in sorted(base.glob("*/*.parquet")):
            yield path.relative_to(self.root).as_posix()

    def age_s(self, key: str) -> float:
        """Seconds since the object was written."""
        return time.time() - self._path(key).stat().st_mtime

    def delete(self, key: str) -> None:
        """Remove an object and make the removal durable."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    def remove_stale_temps(self, grace_s: float) -> list[str]:
        """Remove temp files whose lock is free (their ingest is gone) and older than grace_s."""
        removed = []
        for path in sorted(self.temp_dir.glob("*.tmp")):
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= grace_s and not _is_locked(path):
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed


def _is_locked(path: Path) -> bool:
    """Whether some process (a live ingest) holds the file's lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
