"""The query views, kept at the catalog's position: step 4 of DESIGN §5, for every writer.

A refresh reads the catalog's position and datasets in one snapshot and swaps the views in
one DuckDB transaction. Refreshes run one at a time, so callers queue and share them: after
a burst of ingests, one refresh serves every file that waited for it. Each refresh writes
one log line per event it brought into view -- ours and those of other writers (a
`lakehoused ingest` beside the daemon) alike, each once, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from lakehoused import events
from lakehoused.daemon.health import Health
from lakehoused.errors import Transient
from lakehoused.lakehouse import Lakehouse
from lakehoused.log import StoredEvent
from lakehoused.query import QueryEngine, ViewSpec

log = logging.getLogger("lakehoused")

FOLLOW_S = 0.2  # how often to look for events other processes appended


class Views:
    """The engine's views, brought up to the catalog on request and by following the log."""

    def __init__(
        self,
        lakehouse: Lakehouse,
        engine: QueryEngine,
        health: Health,
        on_event: Callable[[StoredEvent], None] | None = None,
    ) -> None:
        self.lakehouse = lakehouse
        self.engine = engine
        self.health = health
        self.on_event = on_event  # told of each event brought into view, once, in order
        self._lock = threading.Lock()
        self._specs: dict[str, ViewSpec] | None = None  # every view, as last synced
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None  # set, and replaced, after each refresh

    @property
    def seq(self) -> int:
        """The catalog seq the views show."""
        return self.engine.catalog_seq

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Waiters on this loop are woken after each refresh."""
        self._loop = loop
        self._changed = asyncio.Event()

    def reach(self, seq: int) -> int:
        """Block until the views show at least `seq` (refreshing if need be); return theirs."""
        with self._lock:
            if self.engine.catalog_seq >= seq:
                return self.engine.catalog_seq
            return self._refresh()

    def refresh(self) -> int:
        """Bring the views to the catalog's position now; return it."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> int:
        before = self.engine.catalog_seq
        if self._specs is None:
            seq, self._specs, _ = self.lakehouse.view_state()
        else:
            seq, changed, dropped = self.lakehouse.view_state(after=before)
            self._specs.update(changed)
            for name in dropped:
                self._specs.pop(name, None)
        if seq != before:
            self.engine.sync(self._specs, seq)
            self._log_events(before, seq)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._wake)
        return seq

    def _log_events(self, after: int, upto: int) -> None:
        for event in self.lakehouse.log.read(after, limit=upto - after):
            parsed = events.parse(event)
            level = getattr(logging, (parsed.level if parsed else "info").upper())
            log.log(
                level,
                "%s",
                events.describe(event),
                extra={
                    "seq": event.seq,
                    "dataset": event.dataset,
                    "file": event.data.get("source", {}).get("name"),
                    "event": event.type,
                },
            )
            if self.on_event is not None:
                self.on_event(event)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Wait until the views show `seq` (read-your-writes); False on timeout."""
        if self.engine.catalog_seq >= seq:
            return True
        if self.lakehouse.log.last_seq >= seq:
            await asyncio.to_thread(self.reach, seq)

        async def reached() -> None:
            while self.engine.catalog_seq < seq:
                assert self._changed is not None
                await self._changed.wait()

        try:
            await asyncio.wait_for(reached(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def follow(self) -> None:
        """Bring in events other processes append (`lakehoused ingest` beside the daemon)."""
        while True:
            await asyncio.sleep(FOLLOW_S)
            try:
                last = await asyncio.to_thread(lambda: self.lakehouse.log.last_seq)
                if last != self.engine.catalog_seq:
                    await asyncio.to_thread(self.reach, last)
                self.health.recovered("views")
            except Transient as e:
                self.health.degraded("views", str(e))
            except Exception as e:  # an unexpected one too: the views would go stale silently
                self.health.broken("views", f"the query views cannot follow the log: {e}")
