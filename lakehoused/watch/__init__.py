"""Inbox watchers: they tell the daemon when a dropped file is complete, never half-written.

One small protocol, `Watcher`, with one implementation per kind of inbox: a local directory
(`InboxWatcher`, on watchdog notifications plus a polling rescan) and, later, a bucket prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

WRITING = "writing"
"""State of a file some process still holds open for writing."""
SETTLING = "settling"
"""State of a file that looks finished, waiting for its size and mtime to stay put."""


@dataclass(frozen=True)
class Pending:
    """A file seen in the inbox but not yet handed over (for the daemon's /status)."""

    relpath: PurePosixPath
    since: float  # time.time() when the watcher first saw it
    state: str  # WRITING | SETTLING


class Watcher(Protocol):
    """What the daemon needs from an inbox: complete files, each handed over once."""

    def start(self) -> None:
        """Scan the inbox, then keep watching it in the background."""

    def stop(self) -> None:
        """Stop watching and wait for the background work to end."""

    def scan(self) -> int:
        """Look at every file now; return how many new candidates were found."""

    def poll(self) -> list[PurePosixPath]:
        """Hand over the candidates that are complete now, and return them."""

    def forget(self, relpath: PurePosixPath) -> None:
        """The daemon is done with `relpath`; a file found there later is handed over anew."""

    def pending(self) -> list[Pending]:
        """Files not yet handed over, oldest first."""


# Imported last because local.py imports Pending from this package.
from lakehoused.watch.local import InboxWatcher  # noqa: E402

__all__ = ["SETTLING", "WRITING", "InboxWatcher", "Pending", "Watcher"]
