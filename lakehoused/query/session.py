"""One query's life on the engine: its cursor, time limit, transaction and cancel handle.

Every query's time limit is kept by one thread (a Timer thread per query cost ~0.2 ms);
a client that goes away cancels its query through a `Cancel` handle. Both interrupt the
cursor, which DuckDB allows from any thread.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
from collections.abc import Callable
from time import monotonic, perf_counter
from typing import TYPE_CHECKING

import duckdb

from lakehoused.errors import QueryCancelled, QueryError, QueryTimeout
from lakehoused.query.sandbox import query_error

if TYPE_CHECKING:
    from lakehoused.query.engine import QueryEngine

log = logging.getLogger(__name__)

# The catalog seq the views show, a macro in the engine's own schema: user SQL may read it,
# never change it.
SEQ_MACRO = "_lakehoused.catalog_seq"


class Cancel:
    """A handle another thread uses to stop a query: `set()` interrupts its cursor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: Session | None = None
        self.is_set = False

    def set(self) -> None:
        """Stop the query now (or as soon as it starts)."""
        with self._lock:
            self.is_set = True
            session = self._session
        if session is not None:
            session.cancel()

    def _attach(self, session: Session | None) -> bool:
        """Follow `session` from now on (None: no longer); False if already cancelled."""
        with self._lock:
            self._session = None if self.is_set else session
            return not self.is_set


class _Deadlines:
    """One thread for every query's time limit (a Timer thread per query costs ~0.2 ms)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}  # only the live ones
        self._next = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="query-deadlines").start()

    def add(self, delay_s: float, action: Callable[[], None]) -> int:
        """Run `action` after `delay_s` unless cancelled; return the token to cancel it."""
        at = monotonic() + delay_s
        with self._cond:
            self._next += 1
            self._actions[self._next] = action
            # Wake the thread only when this deadline comes first: with one time limit for
            # all, that is only when nothing is pending.
            if not self._heap or at < self._heap[0][0]:
                self._cond.notify()
            heapq.heappush(self._heap, (at, self._next))
            return self._next

    def cancel(self, token: int) -> None:
        """The query finished in time: forget its action (and the cursor it holds)."""
        with self._cond:
            self._actions.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > monotonic():
                    timeout = self._heap[0][0] - monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, token = heapq.heappop(self._heap)
                action = self._actions.pop(token, None)
            if action is not None:
                try:
                    action()
                except Exception:  # this thread must outlive any one query
                    log.exception("query deadline action failed")
            del action  # hold no cursor while waiting for the next deadline


_DEADLINES = _Deadlines()


class Session:
    """One query's cursor, time limit and cancel handle; `release` ends them once."""

    def __init__(
        self,
        engine: QueryEngine,
        statement: str,
        timeout_s: float | None,
        cancel: Cancel | None,
        *,
        transaction: bool,
    ) -> None:
        self.engine, self.statement = engine, statement
        self.limit = engine.timeout_s if timeout_s is None else timeout_s
        self.transaction = transaction
        self.started = perf_counter()
        self.seq = 0
        self._guard = threading.Lock()
        self._timed_out = self._cancelled = self._closed = False
        self._cancel = cancel
        self.cur = engine._take_cursor()
        self._token = _DEADLINES.add(self.limit, self._interrupt)
        if cancel is not None and not cancel._attach(self):
            self._cancelled = True
            engine.cancelled += 1
            self.release(finished=False)
            raise QueryCancelled("the client closed the connection before its query started")

    def begin(self) -> int:
        """Open the query's transaction and read the catalog seq in its snapshot."""
        ((seq,),) = self.cur.execute(f"BEGIN TRANSACTION; SELECT {SEQ_MACRO}()").fetchall()
        return seq

    def _interrupt(self) -> None:
        with self._guard:
            if not self._closed:
                self._timed_out = True
                # The engine may have been closed under a result nobody released.
                with contextlib.suppress(duckdb.Error):
                    self.cur.interrupt()

    def cancel(self) -> None:
        """Interrupt the query because its client went away."""
        with self._guard:
            if self._closed:
                return
            if not self._cancelled:
                self._cancelled = True
                self.engine.cancelled += 1
            # Again on every call: an interrupt sent just before DuckDB started may be lost.
            with contextlib.suppress(duckdb.Error):
                self.cur.interrupt()

    def check(self) -> None:
        """Raise QueryCancelled if the query was cancelled before DuckDB started it (an
        interrupt then finds nothing to stop)."""
        if self._cancelled:
            raise QueryCancelled("the client closed the connection; the query was not run")

    def translate(self, e: BaseException) -> QueryError:
        """A DuckDB error as the error the API reports."""
        if self._cancelled:
            return QueryCancelled("the client closed the connection; the query was interrupted")
        if self._timed_out:
            return QueryTimeout(
                f"query took longer than {self.limit:g} s; raise server.query_timeout_s"
            )
        return query_error(e)

    def release(self, *, finished: bool) -> None:
        """End the transaction and hand the cursor back (safe to call more than once).

        A cursor is reused only after a query that ran to its end: one interrupted, timed
        out or left with an unread stream is closed.
        """
        _DEADLINES.cancel(self._token)
        with self._guard:
            if self._closed:
                return
            self._closed = True
        if self._cancel is not None:
            self._cancel._attach(None)
        reusable = finished and not (self._timed_out or self._cancelled)
        if reusable:
            try:
                self.cur.abort()  # a result read only in part
                if self.transaction:
                    self.cur.execute("ROLLBACK")  # read-only: ends the query's snapshot
            except duckdb.Error:
                reusable = False
        self.engine._return_cursor(self.cur, reusable=reusable)
