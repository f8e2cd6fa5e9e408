"""The local inbox watcher: watchdog notifications, a settle check, and a polling rescan.

What watchdog 7.1 (inotify) reports, measured here:

- ``cp`` into the inbox: created, opened, modified, closed (a close-after-write);
- ``mv`` from elsewhere on the same filesystem: moved, with no source (watchdog's "full
  events"; without them it is reported as created);
- a slow writer: modified per write, and closed only at the very end;
- a folder moved in: created for the folder and for each file in it, no opened or closed;
- a reader (``cat``, the daemon hashing a file): opened, closed_no_write.

So a file becomes a *candidate* on a close-after-write, a move into the inbox, or a created
event not followed by an opened one; an opened event holds it as *writing* until the last
writer closes it. A file moved into place is *complete* by convention (mv, rsync, and every
tool that writes a temporary name first) unless it changes; any other candidate once its
size and mtime have not changed for ``settle_ms``. Either way it is handed to ``on_ready``
once, and only when no process holds it open for writing (a read lease is refused then). A rescan at start and every
``rescan_s`` seconds catches what notifications missed (inotify overflow, network
filesystems), with the settle check alone standing guard.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver

from lakehoused import faults
from lakehoused.errors import ConfigError, InboxUnavailable
from lakehoused.inbox.base import SETTLING, WRITING, Pending
from lakehoused.names import is_ignored

_CHECK_S = 1.0  # how often the inbox and the notification thread are checked
_HANDED = "handed"  # handed over to on_ready; kept so an unchanged file is not handed twice

Signature = tuple[int, int]
"""What "unchanged" means for a file: (st_size, st_mtime_ns)."""


@dataclass
class _Entry:
    """What the watcher knows about one path under the inbox."""

    state: str  # WRITING | SETTLING | _HANDED
    since: float  # time.time() first seen (arrival order for the daemon)
    signature: Signature | None = None  # last observed
    changed_at: float = 0.0  # time.monotonic() when `signature` last changed
    opens: int = 0  # writers and readers holding it open, from opened/closed events
    handed: Signature | None = None  # what was handed over last, if anything
    handed_at: float = 0.0  # time.monotonic() of that handover
    renamed: bool = False  # renamed into place: complete by convention, unless it changes


class InboxWatcher:
    """Watch a local inbox directory; call ``on_ready(relpath, since, signature)`` once per
    complete file.

    ``on_ready`` runs on the watcher's thread and must be quick (the daemon enqueues).
    Ignored paths (``names.is_ignored``) and directories never reach it; files with an
    unsupported suffix do, so the daemon can reject them with a reason. Background work
    takes intervals; ``scan()`` and ``poll()`` are public so tests can drive each step.
    """

    def __init__(
        self,
        root: Path,
        *,
        settle_ms: int,
        rescan_s: float,
        on_ready: Callable[[PurePosixPath, float, Signature], None],
        use_notifications: bool = True,
    ) -> None:
        # Absolute, not resolved: watchdog reports paths under the string it was given.
        self.root = Path(os.path.abspath(root))
        self.settle_s = settle_ms / 1000
        self.rescan_s = rescan_s
        self.on_ready = on_ready
        self.use_notifications = use_notifications
        self.error: BaseException | None = None
        """Why the background thread stopped, when it failed (on_ready or a scan raised)."""
        # A file is handed over at most 10 ms after it settled (the pending files are few and
        # a stat is cheap), never busier than every 5 ms.
        self._poll_interval = max(min(self.settle_s / 10, 0.01), 0.005)
        self._entries: dict[PurePosixPath, _Entry] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start watching, scan what is already there, and start the background thread."""
        if self._thread is not None:
            raise RuntimeError("InboxWatcher.start() called twice")
        if not self.root.is_dir():
            raise ConfigError(f"inbox.path: {self.root} is not a directory; create it")
        if self.use_notifications:
            # Watch first, then scan: a file dropped in between is seen by one or the other
            # (both are idempotent), where scanning first would leave a blind gap.
            # Full events: a file moved in from outside the inbox is a move, not a creation,
            # so it is known to be complete (a created file may still be being written).
            observer = InotifyObserver(generate_full_events=True)
            observer.schedule(_Handler(self), str(self.root), recursive=True)
            observer.start()  # the inotify watches exist once this returns
            self._observer = observer
        try:
            self.scan()
        except BaseException:
            self._stop_observer()
            raise
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="inbox-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the observer and the background thread, and wait for both."""
        self._stopping.set()
        self._stop_observer()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> InboxWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def _run(self) -> None:
        next_scan = time.monotonic() + self.rescan_s
        next_check = time.monotonic() + _CHECK_S
        try:
            while not self._stopping.wait(self._poll_interval):
                faults.point("watcher_dies")
                self.poll()
                now = time.monotonic()
                if self.rescan_s > 0 and now >= next_scan:
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_s
                elif now >= next_check:
                    self._check_alive()
                    next_check = now + _CHECK_S
        except BaseException as e:
            # Kept for the daemon's health check, and re-raised so threading reports it:
            # a watcher that stopped silently would look like an empty inbox.
            self.error = e
            raise

    def _check_alive(self) -> None:
        """Fail loudly when the inbox or the notification thread is gone."""
        if not self.root.is_dir():
            raise InboxUnavailable(f"the inbox {self.root} is gone or is not a directory")
        if self._observer is not None and not self._observer.is_alive():
            raise InboxUnavailable(f"the notification thread watching {self.root} stopped")

    # -- the steps ---------------------------------------------------------------------

    def scan(self, folder: PurePosixPath | None = None) -> int:
        """Make every file not already known a candidate; return how many were new.

        Known means pending (writing or settling), or handed over and unchanged since.
        ``folder`` limits the scan to one sub-folder (a folder moved into the inbox).
        """
        started = time.monotonic()
        if not self.root.is_dir():
            # os.walk would find nothing, and a vanished inbox would look like an empty one.
            raise InboxUnavailable(f"the inbox {self.root} is gone or is not a directory")
        # Files a scan finds have no arrival order of their own: the oldest first (by mtime,
        # then name), not the order the directory happens to list them in.
        found = sorted(self._walk(folder), key=self._age_order)
        new = 0
        with self._lock:
            for relpath in found:
                new += self._candidate(relpath, from_scan=True)
            if folder is None:
                # Handovers the notifications never saw leave (inotify overflow): forget
                # them, or the map would grow forever. Only older than this walk, though,
                # since a file handed over during it may be missing from `found`.
                seen = set(found)
                for relpath, entry in list(self._entries.items()):
                    if entry.state == _HANDED and relpath not in seen and entry.handed_at < started:
                        del self._entries[relpath]
        return new

    def poll(self) -> list[PurePosixPath]:
        """Hand over every candidate whose size and mtime held still for settle_ms; return them."""
        now = time.monotonic()
        ready: list[tuple[float, PurePosixPath, Signature]] = []
        with self._lock:
            for relpath, entry in list(self._entries.items()):
                if entry.state != SETTLING:
                    continue
                signature = self._signature(relpath)
                if signature is None:
                    del self._entries[relpath]  # gone (or no longer a file) while pending
                elif signature != entry.signature:
                    entry.signature, entry.changed_at = signature, now
                    entry.renamed = False  # written after its rename: let it settle
                elif (
                    entry.renamed or self._quiet_for(entry, now) >= self.settle_s
                ) and not self._held_by_writer(relpath, entry, now):
                    entry.state = _HANDED
                    # A close or rescan of a file that ended up as it was handed over
                    # (a writer that changed nothing) is not a new file.
                    if signature != entry.handed:
                        entry.handed, entry.handed_at = signature, now
                        ready.append((entry.since, relpath, signature))
        # Arrival order, since files of one dataset are ingested in that order. Called
        # outside the lock so on_ready may call back into the watcher.
        ready.sort()
        for since, relpath, signature in ready:
            self.on_ready(relpath, since, signature)
        return [relpath for _, relpath, _ in ready]

    def forget(self, relpath: PurePosixPath, handed: Signature | None = None) -> None:
        """The daemon is done with ``relpath`` (archived, rejected, deleted).

        A file found at that path later is handed over again, even with the same size and
        mtime: it is a new drop. With ``after_ingest = "keep"`` do not call this, or every
        rescan hands the kept file over again. ``handed`` is the signature the daemon was
        handed: a newer handover of the same path (a file renamed over it) is kept.
        """
        relpath = PurePosixPath(relpath)
        with self._lock:
            entry = self._entries.get(relpath)
            if entry is None:
                return
            if entry.state == _HANDED:
                if handed is None or entry.handed == handed:
                    del self._entries[relpath]
            else:
                entry.handed = None  # changed since the handover: keep it pending

    def pending(self) -> list[Pending]:
        """Files seen but not yet handed over, oldest first."""
        with self._lock:
            found = [
                Pending(relpath, entry.since, entry.state)
                for relpath, entry in self._entries.items()
                if entry.state != _HANDED
            ]
        return sorted(found, key=lambda p: (p.since, p.relpath))

    # -- notifications -----------------------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        """Apply one watchdog event to the state (called on the observer's thread)."""
        src = self._relpath(event.src_path)
        if isinstance(event, DirMovedEvent | FileMovedEvent):
            self._on_moved(event, src, self._relpath(event.dest_path))
            return
        if src is None or is_ignored(src):
            return
        if isinstance(event, DirCreatedEvent):
            # watchdog synthesises created events for a folder's files when the folder
            # moves in; scanning it as well costs little and does not depend on that.
            self.scan(src)
            return
        with self._lock:
            entry = self._entries.get(src)
            if isinstance(event, DirDeletedEvent):
                self._drop_under(src)
            elif isinstance(event, FileDeletedEvent):
                self._entries.pop(src, None)
            elif isinstance(event, FileOpenedEvent):
                self._opened(src, entry)
            elif isinstance(event, FileClosedEvent | FileClosedNoWriteEvent):
                self._closed(src, entry, wrote=isinstance(event, FileClosedEvent))
            elif isinstance(event, FileCreatedEvent | FileModifiedEvent) and (
                entry is None or entry.state == _HANDED
            ):
                # A created event alone is a mv from outside; cp's opened follows at once
                # and holds it as writing. A modified event for an unknown file means its
                # creation was missed (started mid-write): the settle check guards it.
                self._candidate(src)

    def _on_moved(
        self,
        event: DirMovedEvent | FileMovedEvent,
        src: PurePosixPath | None,
        dest: PurePosixPath | None,
    ) -> None:
        with self._lock:
            if src is not None:
                if event.is_directory:
                    self._drop_under(src)
                else:
                    self._entries.pop(src, None)
            if dest is None or is_ignored(dest):
                return
            if not event.is_directory:
                entry = self._entries.get(dest)
                if entry is not None and entry.state != _HANDED:
                    # Renamed over: whoever had the old file open is not writing this one.
                    del self._entries[dest]
                # Renamed into place: complete by convention (mv, rsync, every tool that
                # writes a temporary name first), so it need not settle.
                self._candidate(dest, renamed=True)
                return
        # watchdog also reports each file of a folder moved within the inbox; the scan
        # covers a folder whose per-file events never come.
        self.scan(dest)

    def _opened(self, relpath: PurePosixPath, entry: _Entry | None) -> None:
        if entry is None:
            entry = self._entries[relpath] = _Entry(state=WRITING, since=time.time())
        elif entry.state == _HANDED:
            # Most likely the daemon reading what it was handed. A writer is seen at its
            # close-after-write, or by a rescan if that close is lost.
            return
        entry.state = WRITING
        entry.opens += 1

    def _closed(self, relpath: PurePosixPath, entry: _Entry | None, *, wrote: bool) -> None:
        if entry is not None and entry.state == WRITING:
            # Counted, so a reader closing does not release a file a writer still holds;
            # never below zero, as opens from before start() were not counted.
            entry.opens = max(entry.opens - 1, 0)
            if entry.opens == 0:
                entry.state = SETTLING
                self._restat(relpath, entry)
        elif wrote:
            self._candidate(relpath)

    # -- state helpers (the caller holds the lock) -------------------------------------

    def _candidate(
        self, relpath: PurePosixPath, *, from_scan: bool = False, renamed: bool = False
    ) -> bool:
        """Make ``relpath`` a candidate unless it is already known; True if it was new."""
        signature = self._signature(relpath)
        entry = self._entries.get(relpath)
        if signature is None:
            if entry is not None and entry.state != _HANDED:
                del self._entries[relpath]
            return False
        if entry is None:
            self._entries[relpath] = _Entry(
                SETTLING, time.time(), signature, changed_at=time.monotonic(), renamed=renamed
            )
            return True
        if entry.state == _HANDED and signature != entry.handed:
            # Changed since the handover: a new arrival, handed over again once settled.
            entry.state, entry.since, entry.opens = SETTLING, time.time(), 0
            entry.signature, entry.changed_at = signature, time.monotonic()
            entry.renamed = renamed
            return True
        if entry.state == SETTLING and not from_scan:
            self._restat(relpath, entry, signature)
        return False

    def _restat(
        self, relpath: PurePosixPath, entry: _Entry, signature: Signature | None = None
    ) -> None:
        signature = signature or self._signature(relpath)
        if signature != entry.signature:
            entry.signature, entry.changed_at = signature, time.monotonic()

    def _drop_under(self, folder: PurePosixPath) -> None:
        for relpath in list(self._entries):
            if relpath.is_relative_to(folder):
                del self._entries[relpath]

    # -- the filesystem ----------------------------------------------------------------

    def _relpath(self, path: bytes | str) -> PurePosixPath | None:
        """``path`` relative to the inbox root, or None when it is outside or the root."""
        if not path:
            return None
        try:
            relative = PurePath(os.fsdecode(path)).relative_to(self.root)
        except ValueError:
            return None
        return PurePosixPath(relative.as_posix()) if relative.parts else None

    def _held_by_writer(self, relpath: PurePosixPath, entry: _Entry, now: float) -> bool:
        """Whether a process still has the file open for writing (then it is not complete,
        however it arrived); it settles again from now."""
        if not _open_for_writing(self.root / relpath):
            return False
        entry.renamed, entry.changed_at = False, now
        return True

    def _age_order(self, relpath: PurePosixPath) -> tuple[int, str]:
        signature = self._signature(relpath)
        return (signature[1] if signature else 0, relpath.as_posix())

    @staticmethod
    def _quiet_for(entry: _Entry, now: float) -> float:
        """How long the file has been unchanged: since we saw it change, or since its mtime.

        A file renamed in whose mtime is already older than settle_ms has been still that
        long (writes move the mtime), so it need not wait again: one unchanged look is
        enough. A future mtime (clock skew) falls back to what we observed.
        """
        observed = now - entry.changed_at
        by_mtime = time.time() - entry.signature[1] / 1e9
        return max(observed, by_mtime)

    def _signature(self, relpath: PurePosixPath) -> Signature | None:
        """(size, mtime_ns) of a regular file, or None if it is gone or is not one.

        lstat, not stat: a symlink dropped in the inbox would let the daemon read a file
        outside it, so links are never handed over.
        """
        try:
            st = os.lstat(self.root / relpath)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    def _walk(self, folder: PurePosixPath | None) -> Iterator[PurePosixPath]:
        """Every regular, not ignored file under the root (or one folder of it)."""
        top = self.root / folder if folder is not None else self.root
        for dirpath, dirnames, filenames in os.walk(top):
            here = PurePosixPath(Path(dirpath).relative_to(self.root).as_posix())
            # Pruned in place so .done/ and .rejected/ are never walked.
            dirnames[:] = [d for d in dirnames if not is_ignored(here / d)]
            for name in filenames:
                relpath = here / name
                if not is_ignored(relpath):
                    yield relpath


def _open_for_writing(path: Path) -> bool:
    """Whether some process has `path` open for writing, as far as the kernel can tell.

    A read lease is granted only when no process has the file open for writing (fcntl(2)):
    one taken and dropped at once answers the question. Where leases are not available (a
    file of another owner without CAP_LEASE, a network filesystem) the answer is "no", and
    the settle check and the rename convention stand alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.EBUSY)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


class _Handler(FileSystemEventHandler):
    """Forwards every watchdog event to the watcher's state."""

    def __init__(self, watcher: InboxWatcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: FileSystemEvent) -> None:
        self._watcher._on_event(event)
