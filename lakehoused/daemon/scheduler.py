"""The per-dataset scheduler: arrival order within a dataset, parallel across datasets.

Every file handed over by the inbox becomes a ticket until its ingest ends. Tickets of one
dataset form a lane, ingested one at a time in arrival order; lanes run in parallel, a few
files at a time. A failure that is not the file's fault keeps the ticket at the head of its
lane and retries it with a bounded backoff (DESIGN §7); the lane waits, so order holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lakehoused import names
from lakehoused.daemon.health import Health, rfc3339
from lakehoused.errors import (
    InboxUnavailable,
    LogBusy,
    LogError,
    RejectedFile,
    SourceChanged,
    StoreUnavailable,
    Transient,
)
from lakehoused.inbox import SourceFile
from lakehoused.ingest.pipeline import Outcome

log = logging.getLogger("lakehoused")

QUEUED = "queued"
IN_FLIGHT = "in_flight"
RETRYING = "retrying"
BACKOFF_S = (1, 2, 5, 10, 30, 60)
"""Seconds before each retry of a file; the last one repeats (bounded, never a tight loop)."""

Ingest = Callable[[SourceFile, Any], Outcome | None]
"""Ingests a file: (its source, what was decided for it on an earlier try, or None)."""


@dataclass
class Ticket:
    """A file the daemon has taken on and not finished with."""

    source: SourceFile
    lane: str  # its dataset; "" for a file no dataset takes (it is rejected once staged)
    state: str = QUEUED
    attempts: int = 0
    retry_at: float = 0.0  # time.monotonic() of the next try
    error: str | None = None
    started: float | None = None  # time.time() of the try in flight
    decided: Any = None  # its event is in: a retry does only the steps after it

    def to_json(self) -> dict:
        """The /status form."""
        body: dict = {
            "file": self.source.name.as_posix(),
            "dataset": self.lane or None,
            "state": self.state,
            "since": rfc3339(self.source.since),
        }
        if self.attempts:
            body["attempts"] = self.attempts
        if self.state == RETRYING:
            body["retry_in_s"] = round(max(self.retry_at - time.monotonic(), 0), 3)
            body["error"] = self.error
        return body


def _part(error: BaseException) -> str | None:
    """Which part of the daemon a transient failure degrades; None for the file's own."""
    for found in (error, error.__cause__):
        if isinstance(found, LogBusy):
            return "log"
        if isinstance(found, StoreUnavailable):
            return "store"
        if isinstance(found, InboxUnavailable | OSError) and found is not None:
            return "inbox"
    return None


class Scheduler:
    """Lanes of tickets, run on a thread pool by `ingest`, with retries."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        parallel: int,
        health: Health,
        on_done: Callable[[Ticket, Outcome | None], None],
        on_retry: Callable[[Ticket, BaseException], None] | None = None,
    ) -> None:
        self._ingest = ingest
        self._parallel = parallel
        self._health = health
        self._on_done = on_done
        self._on_retry = on_retry
        self._threads = ThreadPoolExecutor(parallel, thread_name_prefix="ingest")
        self._lanes: dict[str, deque[Ticket]] = {}
        self._running: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.accepting = True

    # -- the loop's side ---------------------------------------------------------------

    def offer(self, source: SourceFile) -> None:
        """Take on a complete file (on the event loop's thread)."""
        if not self.accepting:
            return
        try:
            lane = names.locate(source.name).dataset
        except RejectedFile:
            lane = ""
        queue = self._lanes.setdefault(lane, deque())
        # A second handover of a file still waiting changes nothing: it is staged as it is
        # when its turn comes. One in flight is another matter: that may be a newer file.
        if any(t.source.name == source.name and t.state != IN_FLIGHT for t in queue):
            return
        queue.append(Ticket(source, lane))
        self._dispatch()

    def tickets(self) -> list[Ticket]:
        """Every ticket not ended, in lane order."""
        return [t for lane in self._lanes.values() for t in lane]

    def _dispatch(self) -> None:
        if not self.accepting:
            return
        now = time.monotonic()
        next_retry = None
        for queue in list(self._lanes.values()):
            if len(self._running) >= self._parallel:
                break
            head = queue[0] if queue else None
            if head is None or head.state == IN_FLIGHT:
                continue
            if head.retry_at > now:
                next_retry = min(next_retry or head.retry_at, head.retry_at)
                continue
            head.state, head.started = IN_FLIGHT, time.time()
            task = asyncio.ensure_future(self._run(head))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        for lane in [name for name, queue in self._lanes.items() if not queue]:
            del self._lanes[lane]
        if next_retry is not None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(
                next_retry - now + 0.001, self._dispatch
            )

    async def _run(self, ticket: Ticket) -> None:
        loop = asyncio.get_running_loop()
        ticket.attempts += 1
        try:
            outcome = await loop.run_in_executor(
                self._threads, self._ingest, ticket.source, ticket.decided
            )
        except Transient as e:
            ticket.decided = getattr(e, "decided", ticket.decided)
            self._retry(ticket, e)
            part = _part(e)
            if part is not None:
                self._health.degraded(part, str(e))
        except LogError as e:
            self._retry(ticket, e)
            self._health.broken("log", f"the event log cannot be written: {e}")
        except Exception as e:  # a bug, or the machine failing under us: not the file's
            log.exception("ingest of %s failed", ticket.source.name)
            self._retry(ticket, e)
            self._health.broken("ingest", f"{type(e).__name__}: {e}")
        else:
            self._end(ticket, outcome)
            for part in ("log", "store", "inbox"):
                self._health.recovered(part)
        finally:
            self._dispatch()

    def _retry(self, ticket: Ticket, error: BaseException) -> None:
        delay = BACKOFF_S[min(ticket.attempts - 1, len(BACKOFF_S) - 1)]
        if isinstance(error, SourceChanged):
            delay = BACKOFF_S[0]  # still being written: it settles soon
        ticket.state, ticket.error = RETRYING, str(error)
        ticket.retry_at = time.monotonic() + delay
        ticket.started = None
        if self._on_retry is not None:
            self._on_retry(ticket, error)
        log.warning(
            "%s waits %s s before try %d: %s",
            ticket.source.name,
            delay,
            ticket.attempts + 1,
            error,
            extra={"file": ticket.source.name.as_posix(), "dataset": ticket.lane or None},
        )

    def _end(self, ticket: Ticket, outcome: Outcome | None) -> None:
        queue = self._lanes.get(ticket.lane)
        if queue and queue[0] is ticket:
            queue.popleft()
        self._on_done(ticket, outcome)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking files; wait (bounded) for the ingests in flight to end."""
        self.accepting = False
        if self._timer is not None:
            self._timer.cancel()
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)
        self._threads.shutdown(wait=False, cancel_futures=True)
