"""The daemon: the inbox watcher, converter processes and the HTTP server in one process.

On start: open the log, catch the projection up, build the views, scan the inbox, watch,
serve, and tell systemd READY=1. Each file is converted in a converter process (CPU-bound
Python in this process would slow every query about tenfold through the GIL, and a poison
file must not take the daemon down). Files of one dataset go one at a time, in arrival
order; different datasets go in parallel, one converter process each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import json
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import web

from lakehoused import faults, names, systemd
from lakehoused.config import Config, load_config
from lakehoused.errors import LakehousedError, RejectedFile
from lakehoused.ingest import CsvFormat, convert
from lakehoused.lakehouse import Lakehouse, Outcome
from lakehoused.server import make_app
from lakehoused.watch import InboxWatcher

log = logging.getLogger("lakehoused")

CONVERTERS = 2  # the machine's cores: one conversion each, the server shares them
LOG_POLL_S = 0.2  # how often to look for events other processes appended
_RETRY_DIED = 1  # a converter that died is given one more try before the file is rejected


# -- the converter process ------------------------------------------------------------------

_worker: Lakehouse | None = None
_progress: multiprocessing.Queue | None = None


def _die_with(daemon_pid: int) -> None:
    """Have the kernel kill this converter when the daemon dies, even by SIGKILL.

    Without it a converter outlives a crashed daemon, waiting forever on its pipe.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:  # it died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _worker_init(config_path: str, progress: multiprocessing.Queue, daemon_pid: int) -> None:
    """Open the lakehouse once per converter process."""
    global _worker, _progress
    _die_with(daemon_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop
    faults.daemon_pid = daemon_pid
    _worker = Lakehouse(load_config(config_path))
    _progress = progress
    _warm_up(_worker)


def _warm_up(lakehouse: Lakehouse) -> None:
    """Convert a two-line file once, so the first real file does not pay for DuckDB's first
    connection and first queries (measured: ~0.4 s on the first file of each converter).

    Both files are locked temp files of the store: another process opening the store
    leaves them alone, and a converter killed meanwhile leaves files the next start
    removes, not litter in /tmp. A failed warm-up costs only that latency.
    """
    try:
        with lakehouse.store.new_temp() as source, lakehouse.store.new_temp() as target:
            source.path.write_text("n,x\n1,a\n", encoding="utf-8")
            convert(source.path, target.path, CsvFormat(), dataset="warm_up")
    except Exception:
        log.exception("converter warm-up failed; the first file will be slower")


def _worker_ingest(path: str, relpath: str) -> dict:
    """Ingest one file in the converter process; return what happened as plain data.

    The file's place in the inbox and the config decide its dataset and mode, as for
    `lakehoused ingest` of a file in the inbox.
    """
    assert _worker is not None

    def report(fraction: float) -> None:
        assert _progress is not None
        _progress.put((relpath, fraction))

    return _summary(_worker.ingest_file(Path(path), progress=report))


def _summary(outcome: Outcome) -> dict:
    """An outcome as plain data: what crosses from a converter, and what /status shows."""
    return {
        "status": outcome.status,
        "dataset": outcome.dataset,
        "seq": outcome.event.seq,
        "reason": outcome.reason,
        "details": outcome.event.data.get("details", {}),
        "at": outcome.event.at,
    }


def _worker_ready() -> int:
    return os.getpid()


# -- the daemon -------------------------------------------------------------------------------


@dataclass
class InFlight:
    """A file being converted right now."""

    relpath: str
    dataset: str
    bytes_total: int
    started: float = field(default_factory=time.time)
    fraction: float = 0.0

    def to_json(self) -> dict:
        """The /status form."""
        return {
            "file": self.relpath,
            "dataset": self.dataset,
            "bytes_done": int(self.bytes_total * self.fraction),
            "bytes_total": self.bytes_total,
            "started_at": _rfc3339(self.started),
        }


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Converter:
    """One converter process (a single-worker pool): a death costs only its own file."""

    def __init__(self, config_path: str, progress: multiprocessing.Queue) -> None:
        self._args = (config_path, progress, os.getpid())
        self.pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=self._args,
        )
        pool.submit(_worker_ready)  # start it now, not on the first file
        return pool

    def restart(self) -> None:
        """Replace a broken pool (its process died)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        """Stop the process; an ingest in flight is abandoned (its temp file is stale)."""
        for process in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Daemon:
    """Everything `lakehoused run` runs, owned by the aiohttp app's lifecycle."""

    def __init__(self, config: Config) -> None:
        if config.path is None:
            raise LakehousedError("the daemon needs a config file (its converters read it)")
        self.config = config
        self.lakehouse = Lakehouse(config)
        self.catalog = self.lakehouse.catalog
        self.log = self.lakehouse.log
        self.engine = self.lakehouse.open_engine()
        self.ready = False
        self.accepting = True
        self.queues: dict[str, deque[PurePosixPath]] = {}
        self.busy: set[str] = set()
        self.in_flight: dict[str, InFlight] = {}
        self.last_ingested: dict | None = None
        self.last_error: dict | None = None
        self._seq_changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        self._converters: list[Converter] = []
        self._free: asyncio.Queue[Converter] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._refresh_lock = threading.Lock()
        self.watcher = InboxWatcher(
            config.inbox.path,
            settle_ms=config.inbox.settle_ms,
            rescan_s=config.inbox.rescan_s,
            on_ready=self._on_ready,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start converters, the log follower and the watcher (which scans the inbox)."""
        self._loop = asyncio.get_running_loop()
        self._seq_changed = asyncio.Condition()
        self._free = asyncio.Queue()
        for _ in range(CONVERTERS):
            converter = Converter(str(self.config.path), self._progress)
            self._converters.append(converter)
            self._free.put_nowait(converter)
        threading.Thread(target=self._follow_progress, daemon=True, name="progress").start()
        self._spawn(self._follow_log())
        self.ready = True
        # Made before watching starts, so they are watched from the first file on: a file
        # moved into a folder that is not watched yet is a rename watchdog cannot pair, and
        # it holds every later event ~0.5 s waiting for the pair (measured: the second file
        # after start was visible only after ~530 ms).
        for folder in (".done", ".rejected"):
            (self.config.inbox.path / folder).mkdir(exist_ok=True)
        await asyncio.to_thread(self.watcher.start)

    async def stop(self) -> None:
        """Stop taking files, let ingests in flight finish (bounded), then stop everything."""
        self.accepting = False
        await asyncio.to_thread(self.watcher.stop)
        deadline = time.monotonic() + 20
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        for converter in self._converters:
            await asyncio.to_thread(converter.shutdown)
        self._progress.put(None)
        self.engine.close()
        self.lakehouse.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the catalog and views -----------------------------------------------------------

    async def refresh(self) -> int:
        """Apply what the log has beyond the views, and swap the views atomically."""
        seq = await asyncio.to_thread(self._refresh_views)
        assert self._seq_changed is not None
        async with self._seq_changed:
            self._seq_changed.notify_all()
        return seq

    def _refresh_views(self) -> int:
        # One refresh at a time: two (after an ingest, and the log follower) could otherwise
        # read the catalog in one order and swap the views in the other, going backwards.
        with self._refresh_lock:
            seq = self.log.catch_up()
            if seq != self.engine.catalog_seq:
                self.engine.sync(self.lakehouse.view_specs(), seq)
            return seq

    async def _follow_log(self) -> None:
        """Events appended by another process (`lakehoused ingest`) reach the views."""
        while True:
            await asyncio.sleep(LOG_POLL_S)
            try:
                if await asyncio.to_thread(lambda: self.log.last_seq) != self.engine.catalog_seq:
                    await self.refresh()
            except LakehousedError as e:
                log.error("following the log: %s", e)

    async def wait_for_seq(self, seq: int, timeout_s: float) -> bool:
        """Wait until the views show `seq` (read-your-writes); False on timeout."""
        assert self._seq_changed is not None
        if self.engine.catalog_seq >= seq:
            return True
        if self.log.last_seq >= seq:
            await self.refresh()

        async def reached() -> None:
            async with self._seq_changed:
                await self._seq_changed.wait_for(lambda: self.engine.catalog_seq >= seq)

        try:
            await asyncio.wait_for(reached(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- ingest scheduling -----------------------------------------------------------------

    def _on_ready(self, relpath: PurePosixPath) -> None:
        """Called from the watcher's thread: hand the file to the event loop."""
        if self._loop is not None and self.accepting:
            self._loop.call_soon_threadsafe(self._enqueue, relpath)

    def _enqueue(self, relpath: PurePosixPath) -> None:
        try:
            entry = names.locate(relpath)
        except RejectedFile as e:
            self._spawn(self._reject_unrouted(relpath, e))
            return
        pending = self.queues.setdefault(entry.dataset, deque())
        if relpath not in pending:
            pending.append(relpath)
        self._dispatch()

    def _dispatch(self) -> None:
        if not self.accepting:
            return
        for dataset, pending in self.queues.items():
            if pending and dataset not in self.busy:
                self.busy.add(dataset)
                self._spawn(self._ingest(dataset, pending.popleft()))

    async def _ingest(self, dataset: str, relpath: PurePosixPath) -> None:
        path = self.config.inbox.path / relpath
        try:
            if (signature := _signature(path)) is not None:
                result = await self._convert(dataset, relpath, path)
                await self.refresh()
                faults.point("crash_after_refresh", path.name)
                await asyncio.to_thread(faults.point, "slow_archive", path.name)
                await asyncio.to_thread(self._finish, relpath, result, signature)
        except Exception:
            log.exception("ingest of %s failed", relpath)
        finally:
            if self.config.inbox.after_ingest != "keep":
                self.watcher.forget(relpath)  # a kept file is handed over again only if it changes
            self.busy.discard(dataset)
            self._dispatch()

    async def _convert(self, dataset: str, relpath: PurePosixPath, path: Path) -> dict:
        """Run the ingest in a free converter process; a dead converter rejects the file."""
        assert self._free is not None
        converter = await self._free.get()
        self.in_flight[str(relpath)] = InFlight(str(relpath), dataset, path.stat().st_size)
        try:
            for attempt in range(_RETRY_DIED + 1):
                try:
                    future = converter.pool.submit(_worker_ingest, str(path), str(relpath))
                    return await asyncio.wrap_future(future)
                except concurrent.futures.process.BrokenProcessPool:
                    converter.restart()
                    if attempt == _RETRY_DIED:
                        return await asyncio.to_thread(
                            self._reject,
                            path,
                            dataset,
                            "the converter process died while reading this file "
                            f"({attempt + 1} tries); it may be too large for memory or "
                            "malformed in a way that crashes the reader; split it or "
                            "check it with `lakehoused ingest`",
                        )
                except LakehousedError:
                    raise
                except Exception as e:
                    # A failure that is not the file's fault still ends with the file
                    # quarantined and explained, never only a log line (nor retried forever).
                    log.exception("ingest of %s failed", relpath)
                    if not path.exists():
                        raise  # gone meanwhile: nothing to record or archive
                    return await asyncio.to_thread(
                        self._reject,
                        path,
                        dataset,
                        f"internal error while ingesting: {type(e).__name__}: {e}; the file "
                        "is kept here so it can be dropped again once that is fixed",
                    )
            raise AssertionError("unreachable")
        finally:
            self.in_flight.pop(str(relpath), None)
            self._free.put_nowait(converter)

    def _reject(self, path: Path, dataset: str | None, reason: str, **details: object) -> dict:
        """Record a rejection decided in the daemon itself (the converter could not)."""
        return _summary(self.lakehouse.reject(path, dataset, reason, details))

    async def _reject_unrouted(self, relpath: PurePosixPath, error: RejectedFile) -> None:
        path = self.config.inbox.path / relpath
        try:
            if path.is_file():
                signature = _signature(path)
                result = await asyncio.to_thread(
                    self._reject, path, None, error.reason, **error.details
                )
                await self.refresh()
                await asyncio.to_thread(self._finish, relpath, result, signature)
        finally:
            self.watcher.forget(relpath)

    def _finish(
        self, relpath: PurePosixPath, result: dict, signature: tuple[int, int, int] | None
    ) -> None:
        """Step 5: archive (or delete, or keep) the source; quarantine a rejected one.

        Only the file that was ingested: a new file dropped under the same name meanwhile
        (a rename replaces it at once) is left for its own turn, never archived unread.
        """
        inbox = self.config.inbox.path
        source = inbox / relpath
        summary = {"file": str(relpath), **result}
        if _signature(source) != signature:
            if result["status"] == "rejected":
                self.last_error = summary
            else:
                self.last_ingested = summary
            return
        if result["status"] == "rejected":
            self.last_error = summary
            target = _free_name(inbox / ".rejected" / relpath, result["seq"])
            _move(source, target)
            error = {
                "file": str(relpath),
                "dataset": result["dataset"],
                "reason": result["reason"],
                "details": result["details"],
                "seq": result["seq"],
                "at": result["at"],
            }
            _write_atomic(target.with_name(target.name + ".error.json"), error)
            return
        self.last_ingested = summary
        action = self.config.inbox.after_ingest
        if action == "archive":
            _move(source, _free_name(inbox / ".done" / relpath, result["seq"]))
        elif action == "delete":
            source.unlink(missing_ok=True)

    def _follow_progress(self) -> None:
        while True:
            try:
                item = self._progress.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            relpath, fraction = item
            if (flight := self.in_flight.get(relpath)) is not None:
                flight.fraction = fraction

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict:
        """The backlog, like Snowpipe's pipe status."""
        now = time.time()
        waiting = self.watcher.pending()
        queued = [str(p) for q in self.queues.values() for p in q]
        oldest = min((p.since for p in waiting), default=None)
        return {
            "accepting": self.accepting,
            "files_pending": len(waiting) + len(queued),
            "oldest_pending_s": None if oldest is None else round(now - oldest, 3),
            "pending": [
                {"file": str(p.relpath), "state": p.state, "since": _rfc3339(p.since)}
                for p in waiting
            ]
            + [{"file": q, "state": "queued"} for q in queued],
            "in_flight": [f.to_json() for f in self.in_flight.values()],
            "last_ingested": self.last_ingested,
            "last_error": self.last_error,
        }


def _signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of a file, None if it is gone: what tells one drop from the
    next (a rename over it brings another inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _free_name(target: Path, seq: int) -> Path:
    """`target`, or `<stem>.<seq><suffixes>` beside it if a file of that name is there."""
    if not target.exists():
        return target
    suffix = names.accepted_suffix(target.name) or target.suffix
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    return target.with_name(f"{stem}.{seq}{suffix}")


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        shutil.move(source, target)


def _write_atomic(path: Path, data: dict) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temp, path)


# -- running it ---------------------------------------------------------------------------------


def build_app(config: Config) -> web.Application:
    """The aiohttp application with the daemon's whole lifecycle in its cleanup context."""
    daemon = Daemon(config)
    app = make_app(daemon, config.server)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await daemon.start()
        yield
        await daemon.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def run(config: Config) -> int:
    """`lakehoused run`: serve until SIGTERM/SIGINT, then stop cleanly and return 0."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = build_app(config)
    server = config.server

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, server.host, server.port, reuse_address=True)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for sock in site._server.sockets if site._server else ():  # type: ignore[attr-defined]
            host, port = sock.getsockname()[:2]
            log.info("serving on http://%s:%s (inbox %s)", host, port, config.inbox.path)
            print(f"lakehoused: serving on http://{host}:{port}", flush=True)
        systemd.notify("READY=1")
        watchdog = asyncio.ensure_future(systemd.keep_alive())
        await stop.wait()
        systemd.notify("STOPPING=1")
        watchdog.cancel()
        await runner.cleanup()

    asyncio.run(main())
    return 0
