"""The local inbox: a directory watched for complete files (watcher.py), staged by hard link.

Staging links the very inode that was opened (or copies it while hashing, across
filesystems), so a file renamed over the name meanwhile is simply the next file. After the
decision, a source is moved only if it is still that inode with that size and mtime: it is
first claimed by a rename, checked, and put back if a newer file had taken the name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from lakehoused import faults, names
from lakehoused.errors import ConfigError, SourceChanged, SourceGone
from lakehoused.inbox.base import OnReady, Pending, SourceFile, StagedSource
from lakehoused.inbox.watcher import InboxWatcher

DONE = ".done"
"""Where archived sources go, under the inbox root."""
REJECTED = ".rejected"
"""Where rejected sources go, beside their `.error.json`."""
_CLAIMS = ".claims"  # a source being deleted is renamed here first
_CHUNK = 1 << 20

Identity = tuple[int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns): one version of one file."""


def _identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def rfc3339_ns(mtime_ns: int) -> str:
    """A file time as RFC 3339 UTC with microseconds."""
    moment = datetime.fromtimestamp(mtime_ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stage_local(path: Path, into: Path) -> tuple[str, Identity]:
    """Make `into` a private copy of the regular file at `path`; return (sha256, identity).

    A hard link of the inode that was opened when both sit on one filesystem (no bytes
    copied), else a copy hashed while it is written. SourceGone when there is no regular
    file at `path`; SourceChanged when a writer changed it while it was read.
    """
    into.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceGone(f"{path} is gone") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SourceGone(f"{path} is a symbolic link, which is never followed") from None
        raise
    with os.fdopen(fd, "rb") as src:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise SourceGone(f"{path} is not a regular file")
        faults.point("pause_stage", path.name)
        digest = hashlib.sha256()
        if _link_open_file(fd, path, into, before):
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
        else:
            with open(into, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
        after = os.fstat(fd)
    if _identity(after) != _identity(before):
        raise SourceChanged(f"{path} changed while it was being staged")
    return digest.hexdigest(), _identity(before)


def _link_open_file(fd: int, path: Path, into: Path, opened: os.stat_result) -> bool:
    """Hard-link the opened inode to `into`; False when it must be copied from `fd` instead
    (another filesystem, or the name no longer holds the opened file)."""
    try:
        # linkat(AT_SYMLINK_FOLLOW) through /proc links exactly the inode behind `fd`, even
        # if `path` was renamed over since it was opened.
        os.link(f"/proc/self/fd/{fd}", into, follow_symlinks=True)
        return True
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EMLINK):
            return False
        # ENOENT: no /proc. EXDEV: some kernels and sandboxes refuse the /proc link itself;
        # both: link by name, then check it is the inode that was opened.
        if e.errno not in (errno.ENOENT, errno.EXDEV):
            raise
    try:
        os.link(path, into)
    except FileNotFoundError:
        return False  # renamed away since it was opened: the open file is still ours to copy
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            return False
        raise
    if os.stat(into).st_ino != opened.st_ino:
        into.unlink()  # the name holds a newer file now; the opened one is copied instead
        return False
    return True


def staged_source(source: SourceFile, path: Path, into: Path, uri: str) -> StagedSource:
    """Stage the local file `path` (as `source`) into `into`: the StagedSource of it."""
    sha256, identity = stage_local(path, into)
    copy = into.stat()
    return StagedSource(
        source=source,
        path=into,
        uri=uri,
        sha256=sha256,
        bytes=identity[2],
        mtime=rfc3339_ns(identity[3]),
        identity=identity,
        still=(copy.st_size, copy.st_mtime_ns),
    )


class LocalInbox:
    """A local directory: `inbox/x.csv` feeds dataset x, `inbox/sales/*.csv` dataset sales."""

    def __init__(self, root: Path, *, settle_ms: int = 250, rescan_s: float = 30) -> None:
        self.root = Path(os.path.abspath(root))
        self.url = self.root.as_uri()
        self._settle_ms, self._rescan_s = settle_ms, rescan_s
        self._watcher: InboxWatcher | None = None

    problem: str | None = None  # a local directory has no passing failures: it is or it is not

    @property
    def error(self) -> BaseException | None:
        """Why the watcher stopped, if it did."""
        return self._watcher.error if self._watcher else None

    def start(self, on_ready: OnReady) -> None:
        """Create `.done/` and `.rejected/`, then watch (the watcher scans first)."""
        if not self.root.is_dir():
            raise ConfigError(f"inbox.path: {self.root} is not a directory; create it")
        # Made before watching starts, so they are watched from the first file on: a file
        # moved into a folder not watched yet is a rename watchdog cannot pair, and it holds
        # every later event ~0.5 s waiting for the pair (measured: ~530 ms for the 2nd file).
        for folder in (DONE, REJECTED, _CLAIMS):
            (self.root / folder).mkdir(exist_ok=True)

        def ready(relpath: PurePosixPath, since: float, seen: tuple[int, int]) -> None:
            on_ready(SourceFile(relpath, since, seen))

        self._watcher = InboxWatcher(
            self.root, settle_ms=self._settle_ms, rescan_s=self._rescan_s, on_ready=ready
        )
        self._watcher.start()

    def stop(self) -> None:
        """Stop watching."""
        if self._watcher is not None:
            self._watcher.stop()

    def pending(self) -> list[Pending]:
        """Files seen but not yet complete, oldest first."""
        return self._watcher.pending() if self._watcher else []

    def forget(self, source: SourceFile) -> None:
        """A file found at this name later is a new drop."""
        if self._watcher is not None:
            self._watcher.forget(source.name, source.seen or None)

    def uri(self, name: PurePosixPath) -> str:
        """The file URI of a source."""
        return (self.root / name).as_uri()

    def stage(self, source: SourceFile, into: Path) -> StagedSource:
        """Link (or copy) the source into the ingest's workspace and hash it."""
        return staged_source(source, self.root / source.name, into, self.uri(source.name))

    def archive(self, staged: StagedSource) -> bool:
        """Move the source to `.done/<name>` (a free name beside an older one)."""
        target = _free_name(self.root / DONE / staged.source.name)
        return self._claim(staged, target) is not None

    def delete(self, staged: StagedSource) -> bool:
        """Delete the source."""
        claimed = self._claim(staged, self.root / _CLAIMS / uuid.uuid4().hex)
        if claimed is None:
            return False
        claimed.unlink(missing_ok=True)
        return True

    def quarantine(self, staged: StagedSource, error: dict) -> bool:
        """Move the source to `.rejected/<name>` and write `<name>.error.json` beside it."""
        target = _free_name(self.root / REJECTED / staged.source.name)
        if self._claim(staged, target) is None:
            return False
        _write_json(target.with_name(target.name + ".error.json"), error)
        return True

    def _claim(self, staged: StagedSource, target: Path) -> Path | None:
        """Rename the source to `target` if it is still the staged file; else leave it be.

        A rename over the name between the check and the move would take the newer file:
        so the moved file is checked again, and put back under its name if it is not ours.
        """
        source = self.root / staged.source.name
        try:
            if _identity(os.lstat(source)) != staged.identity:
                return None
        except FileNotFoundError:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        if _identity(os.lstat(target)) == staged.identity:
            return target
        self._put_back(target, source)
        return None

    def _put_back(self, claimed: Path, source: Path) -> None:
        try:
            os.link(claimed, source)  # never over a file that arrived meanwhile
            claimed.unlink()
        except FileExistsError:
            # A third version arrived within microseconds: the second is kept, with a
            # reason, rather than lost or written over.
            target = _free_name(self.root / REJECTED / source.relative_to(self.root))
            os.rename(claimed, target)
            _write_json(
                target.with_name(target.name + ".error.json"),
                {
                    "file": source.relative_to(self.root).as_posix(),
                    "reason": "this file was replaced twice while the daemon archived an "
                    "earlier one, and was set aside unread; drop it again to ingest it",
                },
            )


def _free_name(target: Path) -> Path:
    """`target`, or `<stem>.<n><suffixes>` beside it when that name is taken."""
    if not target.exists():
        return target
    suffix = names.accepted_suffix(target.name) or target.suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    for n in range(1, 1_000_000):
        candidate = target.with_name(f"{stem}.{n}{suffix}")
        if not candidate.exists():
            return candidate
    return target.with_name(f"{stem}.{uuid.uuid4().hex}{suffix}")


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, path)


__all__ = [
    "DONE",
    "REJECTED",
    "LocalInbox",
    "Pending",
    "rfc3339_ns",
    "stage_local",
    "staged_source",
]
