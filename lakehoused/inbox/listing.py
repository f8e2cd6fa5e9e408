"""The bucket-prefix watcher: list the prefix every `rescan_s`, hand each new object over once.

What S3 offers, and what follows:

- An upload in progress is never listed (a PUT is visible once whole, a multipart upload
  once completed), so a listed object is complete: no settle time.
- Keys can arrive that sort before ones already seen, so `start_after` cannot bound a
  listing: every pass lists the whole prefix and compares (key, etag, size) with what was
  handed over. It lists folder by folder (a `/` delimiter), so `.done/` and `.rejected/`
  (or any hidden or temporary folder) are named once and never listed again, however
  many archived objects they hold.
- MinIO streams bucket notifications (ListenBucketNotification); S3 and others do not.
  Where the server streams them, each one is only a hint that starts a listing at once.
  Support is detected once: a server without it answers with something else, and the
  minio client's own iterator would then re-request about 180 times a second.
- A listing that fails (the endpoint went away) is the inbox's passing problem: retried
  with a bounded backoff, reported as `problem` until a listing works again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from minio.error import S3Error

from lakehoused import faults
from lakehoused.errors import InboxUnavailable
from lakehoused.inbox.base import Pending
from lakehoused.names import is_ignored
from lakehoused.s3 import FAILURES, Bucket, Listed

log = logging.getLogger("lakehoused")

UNUSABLE = "unusable"
"""State of an object whose key is no usable file name (empty, `.` or `..` segments)."""
BACKOFF_S = (1, 2, 5, 10, 30)
"""Seconds before each retry of a failed listing; the last repeats."""
MIN_GAP_S = 0.05
"""The least time between two listings, however many notifications arrive."""
_EVENTS = ("s3:ObjectCreated:*",)
_STREAM_TYPES = ("text/event-stream", "application/json", "application/x-ndjson")

Seen = tuple[int, str]
"""What tells one upload under a key from the next: (size, etag)."""
OnObject = Callable[[PurePosixPath, float, Seen], None]


class PrefixWatcher:
    """List `bucket`'s prefix at start and every `rescan_s` (0 = only at start and on
    notifications); call `on_ready(name, since, (size, etag))` once per new or changed object.

    `on_ready` runs on the watcher's thread and must be quick. `scan()` is public so tests
    and benchmarks can drive one pass.
    """

    def __init__(
        self,
        bucket: Bucket,
        *,
        rescan_s: float,
        on_ready: OnObject,
        notifications: bool = True,
    ) -> None:
        self.bucket = bucket
        self.rescan_s = rescan_s
        self.on_ready = on_ready
        self.use_notifications = notifications
        self.notifications: bool | None = None
        """Whether the server streams bucket notifications (None until detected)."""
        self.problem: str | None = None
        self.error: BaseException | None = None
        self.listings = 0
        """Listing requests made so far (one per folder per pass)."""
        self._handed: dict[str, tuple[Seen, float]] = {}  # name -> (seen, monotonic handed)
        self._unusable: dict[str, float] = {}  # key -> time.time() first seen
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # a notification arrived, or stop
        self._threads: list[threading.Thread] = []
        self._stream = None  # the open notification response, to close on stop

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """List once (raising what fails), then keep watching in the background."""
        if self._threads:
            raise RuntimeError("PrefixWatcher.start() called twice")
        self.scan()
        self._stopping.clear()
        self._threads.append(threading.Thread(target=self._run, name="inbox-lister", daemon=True))
        if self.use_notifications:
            self._threads.append(
                threading.Thread(target=self._listen, name="inbox-notices", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop listing and listening, and wait (briefly) for both threads."""
        self._stopping.set()
        self._wake.set()
        stream = self._stream
        if stream is not None:
            # Closing a connection another thread reads: whatever it raises is moot.
            with contextlib.suppress(Exception):
                stream.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    # -- the steps ---------------------------------------------------------------------

    def scan(self) -> int:
        """List the whole prefix; hand over what is new or changed; return how many."""
        started = time.monotonic()
        found = self._list()
        now = time.monotonic()
        ready: list[tuple[float, str, Seen]] = []
        with self._lock:
            for name, item in found.items():
                seen = (item.size, item.etag)
                known = self._handed.get(name)
                if known is None or known[0] != seen:
                    self._handed[name] = (seen, now)
                    ready.append((item.modified, name, seen))
            # Handovers whose object is gone (archived, deleted) leave, or the map would
            # grow forever; only those older than this pass, which may have missed newer.
            for name, (_, at) in list(self._handed.items()):
                if name not in found and at < started:
                    del self._handed[name]
        ready.sort()  # arrival order: the upload's time, then the key
        for _, name, seen in ready:
            self.on_ready(PurePosixPath(name), time.time(), seen)
        return len(ready)

    def forget(self, name: PurePosixPath, seen: Seen | None) -> None:
        """The daemon is done with this handover: the same object listed later is a new drop."""
        with self._lock:
            known = self._handed.get(name.as_posix())
            if known is not None and (seen is None or known[0] == tuple(seen)):
                del self._handed[name.as_posix()]

    def pending(self) -> list[Pending]:
        """Objects listed but never handed over: those whose key is no usable file name."""
        with self._lock:
            return [
                Pending(PurePosixPath(key), since, UNUSABLE)
                for key, since in sorted(self._unusable.items(), key=lambda kv: kv[1])
            ]

    # -- listing -----------------------------------------------------------------------

    def _list(self) -> dict[str, Listed]:
        """Every object under the prefix, by its name relative to it; folder by folder."""
        prefix = self.bucket.prefix
        found: dict[str, Listed] = {}
        folders = [prefix]
        while folders:
            folder = folders.pop()
            self.listings += 1
            for item in self.bucket.listing(folder, recursive=False):
                if isinstance(item, str):  # a sub-folder
                    name = item[len(prefix) :].rstrip("/")
                    if name and _usable(name) and not is_ignored(name):
                        folders.append(item)
                    continue
                name = item.key[len(prefix) :]
                if name.endswith("/"):
                    continue  # a "folder" marker some consoles create
                if not _usable(name):
                    self._note_unusable(item.key)
                elif not is_ignored(name):
                    found[name] = item
        return found

    def _note_unusable(self, key: str) -> None:
        with self._lock:
            if key in self._unusable:
                return
            self._unusable[key] = time.time()
        log.warning(
            "%s: the object %r is never ingested: its key has an empty, '.' or '..' segment; "
            "copy it to a plain name under the prefix",
            self.bucket.url,
            key,
            extra={"file": key},
        )

    def _run(self) -> None:
        failures = 0
        next_scan = self._next(time.monotonic())
        try:
            while not self._stopping.is_set():
                timeout = None if next_scan is None else max(next_scan - time.monotonic(), 0)
                self._wake.wait(timeout)
                if self._stopping.is_set():
                    return
                self._wake.clear()
                faults.point("watcher_dies")
                try:
                    self.scan()
                except FAILURES as e:
                    failures += 1
                    delay = BACKOFF_S[min(failures, len(BACKOFF_S)) - 1]
                    error = self.bucket.unavailable(e, f"list {self.bucket.url}", InboxUnavailable)
                    self.problem = f"{error}; listing again in {delay} s"
                    next_scan = time.monotonic() + delay
                    # Notifications that arrive meanwhile must not shorten the backoff.
                    self._stopping.wait(delay)
                    self._wake.clear()
                    continue
                if failures:
                    log.warning("listing %s works again", self.bucket.url)
                failures, self.problem = 0, None
                next_scan = self._next(time.monotonic())
                self._stopping.wait(MIN_GAP_S)
        except BaseException as e:
            # A bug, not the server: the daemon is broken without its inbox (never silent).
            self.error = e
            raise

    def _next(self, now: float) -> float | None:
        return now + self.rescan_s if self.rescan_s > 0 else None

    # -- notifications -----------------------------------------------------------------

    def _listen(self) -> None:
        """Follow the server's bucket notifications, if it has them; each one wakes a listing."""
        failures = 0
        while not self._stopping.is_set():
            try:
                response = self._open_stream()
            except FAILURES as e:
                if isinstance(e, S3Error):
                    self._no_notifications(f"it answered {e.code}")
                    return
                failures += 1  # unreachable now: the listings report that; try again later
                self._stopping.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])
                continue
            except ValueError:  # the minio client knows the host is AWS S3: no such API
                self._no_notifications("it is Amazon S3")
                return
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            if self.notifications is None:
                if content_type.lower() not in _STREAM_TYPES:
                    response.close()
                    response.release_conn()
                    self._no_notifications(f"it answered {content_type or 'no content type'}")
                    return
                self.notifications = True
                log.info("%s: following bucket notifications as hints", self.bucket.url)
            failures = 0
            self._follow(response)
            if not self._stopping.is_set():
                failures += 1
                self._stopping.wait(BACKOFF_S[min(failures, len(BACKOFF_S)) - 1])

    def _open_stream(self):
        # ListenBucketNotification is a MinIO extension the client exposes only through an
        # iterator that re-requests at once whenever a response ends: so the request is
        # made here, and its answer read as it comes.
        return self.bucket.client._execute(
            "GET",
            self.bucket.name,
            query_params={"prefix": self.bucket.prefix, "suffix": "", "events": _EVENTS},
            preload_content=False,
        )

    def _follow(self, response) -> None:
        self._stream = response
        try:
            while not self._stopping.is_set():
                line = response.readline()
                if not line:
                    return  # the server ended the stream
                text = line.strip()
                if not text:
                    continue  # a keep-alive
                try:
                    records = json.loads(text).get("Records")
                except (ValueError, AttributeError):
                    continue
                if records:
                    self._wake.set()
        except Exception:
            # The connection broke, or stop() closed it under this read: either way this
            # stream is over, and _listen decides whether to open another.
            return
        finally:
            self._stream = None
            with contextlib.suppress(Exception):
                response.close()
                response.release_conn()

    def _no_notifications(self, why: str) -> None:
        self.notifications = False
        when = f"every {self.rescan_s:g} s" if self.rescan_s > 0 else "at start only"
        log.info(
            "%s: the server sends no bucket notifications (%s); listing %s",
            self.bucket.url,
            why,
            when,
        )


def _usable(name: str) -> bool:
    """Whether a key (relative to the prefix) is a plain path: no empty, '.' or '..' parts."""
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in name.split("/"))
