"""The staging area: one private, locked workspace per ingest in flight.

Each ingest gets a directory `<state>/staging/<id>/` holding the staged copy of its source
and the Parquet file it converts to. The workspace is locked (flock on its `lock` file) for
as long as the ingest lives, so a cleanup can tell a live ingest from one a crash left
behind, and `gc` can see that an ingest is about to reference an object (DESIGN §5).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

from lakehoused.errors import StoreError

_CHUNK = 1 << 20
_LOCK = "lock"
_CREATING_S = 60  # a workspace without its lock file this young is being created


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def finish(path: Path) -> tuple[str, int]:
    """fsync a file a conversion wrote; its (sha256, size)."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
    return file_sha256(path), path.stat().st_size


class Workspace:
    """One ingest's private directory: its staged source and its converted object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self._fd: int | None = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    @property
    def object_path(self) -> Path:
        """Where the converter writes the Parquet file."""
        return self.path / "object.parquet"

    @property
    def rejects_path(self) -> Path:
        """Where the converter writes the bad records it keeps aside, if asked to."""
        return self.path / "rejected_rows.parquet"

    def source_path(self, name: str) -> Path:
        """Where the source is staged: its own file name, so suffixes still tell its format."""
        return self.path / "source" / Path(name).name

    def finish_object(self) -> tuple[str, int]:
        """fsync the converted object and return its (sha256, size)."""
        return finish(self.object_path)

    def close(self) -> None:
        """Remove the workspace and drop its lock (step 6 of DESIGN §5)."""
        if self._fd is None:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Staging:
    """The staging area under the state directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"staging area {self.root}: {e.strerror or e}") from e

    def workspace(self) -> Workspace:
        """A new locked workspace for one ingest."""
        return Workspace(self.root / uuid.uuid4().hex)

    def in_flight(self) -> int:
        """How many workspaces a live ingest holds right now (in any process)."""
        return sum(1 for path in self._workspaces() if _is_locked(path / _LOCK))

    def remove_stale(self, grace_s: float = 0.0, *, dry_run: bool = False) -> list[str]:
        """Remove workspaces no live ingest holds, older than `grace_s`; return their names."""
        removed = []
        for path in self._workspaces():
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= grace_s and not _is_locked(path / _LOCK):
                if not dry_run:
                    shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def _workspaces(self) -> list[Path]:
        try:
            return sorted(p for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []


def _is_locked(path: Path) -> bool:
    """Whether some process (a live ingest) holds the workspace's lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        # A workspace without its lock file is being created (young) or was half removed.
        try:
            return time.time() - path.parent.stat().st_mtime < _CREATING_S
        except FileNotFoundError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return False
