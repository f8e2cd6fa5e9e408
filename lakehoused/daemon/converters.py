"""Converter processes: CSV to Parquet away from the serving process, one file at a time each.

CPU-bound Python in the daemon would slow every query about tenfold through the GIL, and a
poison file must not take the daemon down: so each conversion runs in a process of its own
(a single-worker pool, so a death costs only its own file). A converter reads the staged
copy and writes the object file; it never opens the log or the store, and returns plain data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import queue
import signal
import threading

from lakehoused import faults
from lakehoused.config import Config
from lakehoused.errors import LakehousedError, RejectedFile, Transient
from lakehoused.ingest import CsvFormat
from lakehoused.ingest.pipeline import Converted, ConvertJob, run_job
from lakehoused.ingest.staging import Staging

log = logging.getLogger("lakehoused")

_RETRY_DIED = 1  # a converter that died is given one more try before the file is rejected
_PR_SET_PDEATHSIG = 1

# -- inside a converter process -----------------------------------------------------------------

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


def _init(config: Config, progress: multiprocessing.Queue, daemon_pid: int) -> None:
    """Set a converter process up: die with the daemon, leave signals to it, warm up."""
    global _progress
    _die_with(daemon_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when to stop
    faults.daemon_pid = daemon_pid
    _progress = progress
    _warm_up(Staging(config.staging_path))


def _warm_up(staging: Staging) -> None:
    """Convert a two-line file once, so the first real file does not pay for DuckDB's first
    connection and first queries (measured: ~0.4 s on the first file of each converter).

    In a locked workspace of the staging area: a converter killed meanwhile leaves a
    workspace the next start removes, not litter in /tmp. A failed warm-up costs only latency.
    """
    try:
        with staging.workspace() as workspace:
            source = workspace.source_path("warm_up.csv")
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text("n,x\n1,a\n", encoding="utf-8")
            run_job(ConvertJob(source, workspace.object_path, "", CsvFormat(), "warm_up"))
    except Exception:
        log.exception("converter warm-up failed; the first file will be slower")


def _convert(job: ConvertJob) -> Converted:
    """Run one job in this converter process, reporting progress to the daemon."""

    def report(fraction: float) -> None:
        assert _progress is not None
        _progress.put((job.name, fraction))

    return run_job(job, report)


def _pid() -> int:
    return os.getpid()


# -- in the daemon ------------------------------------------------------------------------------


class _Converter:
    """One converter process (a single-worker pool)."""

    def __init__(self, args: tuple) -> None:
        self._args = args
        self.pool = self._start()

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=self._args,
        )
        pool.submit(_pid)  # start it now, not on the first file
        return pool

    def restart(self) -> None:
        """Replace a broken pool (its process died)."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        """Stop the process; a conversion in flight is abandoned (its workspace is stale)."""
        for process in list(getattr(self.pool, "_processes", {}).values()):
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class ConverterPool:
    """`size` converter processes; `convert` blocks a thread until one has done the job."""

    def __init__(self, config: Config, size: int) -> None:
        self.size = size
        self.restarts = 0
        self.progress: dict[str, float] = {}  # job name -> fraction done
        self._config = config
        self._queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        self._free: queue.Queue[_Converter] = queue.Queue()
        self._all: list[_Converter] = []
        self._stopping = False

    def start(self) -> None:
        """Start the processes (they warm up in the background) and the progress reader."""
        args = (self._config, self._queue, os.getpid())
        for _ in range(self.size):
            converter = _Converter(args)
            self._all.append(converter)
            self._free.put(converter)
        threading.Thread(target=self._follow_progress, daemon=True, name="progress").start()

    def convert(self, job: ConvertJob) -> Converted:
        """Convert in a free process; a dead converter or an unexpected error rejects the file.

        What is not the file's fault and passes (a Transient) propagates for a retry.
        """
        converter = self._free.get()
        self.progress[job.name] = 0.0
        try:
            for attempt in range(_RETRY_DIED + 1):
                try:
                    return converter.pool.submit(_convert, job).result()
                except concurrent.futures.process.BrokenProcessPool:
                    if self._stopping:
                        # Terminated by shutdown, not killed by the file: the file is kept,
                        # and taken again at the next start.
                        raise Transient("the daemon is stopping; the file is kept") from None
                    converter.restart()
                    self.restarts += 1
                    if attempt == _RETRY_DIED:
                        raise RejectedFile(
                            "the converter process died while reading this file "
                            f"({attempt + 1} tries); it may be too large for memory or "
                            "malformed in a way that crashes the reader; split it or "
                            "check it with `lakehoused ingest`"
                        ) from None
                except LakehousedError:
                    raise
                except Exception as e:
                    # Not the file's fault, but retrying would fail the same way: the file
                    # is quarantined and explained, never only a log line nor retried forever.
                    log.exception("converting %s failed", job.name)
                    raise RejectedFile(
                        f"internal error while ingesting: {type(e).__name__}: {e}; the file "
                        "is kept here so it can be dropped again once that is fixed"
                    ) from e
            raise AssertionError("unreachable")
        finally:
            self.progress.pop(job.name, None)
            self._free.put(converter)

    def shutdown(self) -> None:
        """Stop every converter process."""
        self._stopping = True
        for converter in self._all:
            converter.shutdown()
        self._queue.put(None)

    def _follow_progress(self) -> None:
        while True:
            try:
                item = self._queue.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            name, fraction = item
            if name in self.progress:  # not a late report of a job already done
                self.progress[name] = fraction
