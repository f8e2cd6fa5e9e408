"""The inbox protocol: where source files come from, and what becomes of them afterwards.

An inbox discovers complete files and hands each over once; stages one into a private copy
that everything after reads; and, once the daemon has decided, archives, deletes or
quarantines it -- but only if it is still the file that was staged. No local path of the
inbox leaks out of it: files are named by their path relative to the inbox root (or prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

WRITING = "writing"
"""State of a file some process still holds open for writing."""
SETTLING = "settling"
"""State of a file that looks finished, waiting for its size and mtime to stay put."""


@dataclass(frozen=True)
class Pending:
    """A file seen in the inbox but not yet handed over (for the daemon's /status)."""

    relpath: PurePosixPath
    since: float  # time.time() when the inbox first saw it
    state: str  # WRITING | SETTLING


@dataclass(frozen=True)
class SourceFile:
    """A complete file found in an inbox and handed over for ingest."""

    name: PurePosixPath  # its path relative to the inbox root: this decides its dataset
    since: float  # time.time() when the inbox first saw it (arrival order)
    seen: tuple[Any, ...] = ()  # what the inbox saw at the handover (size, mtime; etag)


@dataclass(frozen=True)
class StagedSource:
    """The private copy of a source: everything after staging reads only `path`."""

    source: SourceFile
    path: Path  # the staged copy, inside an ingest's workspace
    uri: str  # where the source was, for events
    sha256: str
    bytes: int
    mtime: str  # RFC 3339, as the inbox reported it
    identity: tuple[Any, ...]  # what tells this version of the file from a later one
    # (size, mtime_ns) of the staged copy when staging ended: a hard-linked copy changes
    # with its source, and what is converted must be what was hashed.
    still: tuple[int, int] | None = None

    def facts(self) -> dict:
        """What an event records of the source."""
        return {
            "uri": self.uri,
            "name": self.source.name.as_posix(),
            "sha256": self.sha256,
            "bytes": self.bytes,
            "mtime": self.mtime,
        }


OnReady = Callable[[SourceFile], None]
"""Called once per complete file, from the inbox's own thread: must be quick."""


class Inbox(Protocol):
    """What the daemon needs from an inbox: complete files, each handed over once."""

    url: str
    """Where the inbox is, for messages (never a secret)."""

    error: BaseException | None
    """Why discovery stopped, when it failed: the daemon is broken without it."""

    problem: str | None
    """A passing failure of discovery now (an endpoint out of reach), retried in the
    background: the daemon is degraded while it lasts. None when all is well."""

    def start(self, on_ready: OnReady) -> None:
        """Look at what is there now, then keep discovering complete files in the background."""

    def stop(self) -> None:
        """Stop discovering and wait for the background work to end."""

    def pending(self) -> list[Pending]:
        """Files seen but not yet complete, oldest first."""

    def stage(self, source: SourceFile, into: Path) -> StagedSource:
        """Copy (or link) the source to `into`, hashing it; SourceGone if it is not there."""

    def archive(self, staged: StagedSource) -> bool:
        """Move the source under `.done/`, if it is still the staged file; True if moved."""

    def delete(self, staged: StagedSource) -> bool:
        """Delete the source, if it is still the staged file; True if deleted."""

    def quarantine(self, staged: StagedSource, error: dict) -> bool:
        """Move the source under `.rejected/` beside `<name>.error.json` holding `error`,
        if it is still the staged file; True if moved."""

    def forget(self, source: SourceFile) -> None:
        """The daemon is done with this handover; a file found at its name later is new."""
