"""The daemon: the inbox, converter processes, the query views and the HTTP server in one
process, and the one writer of the event log (DESIGN §7).

On start: open the log, catch the projection up, build the views, start the converters,
look at the inbox and watch it, serve, and tell systemd READY=1. The parts, each in its
own module: converters.py (processes that turn CSV into Parquet), scheduler.py (lanes per
dataset, retries), files.py (the steps of one file), views.py (the query views and the
log lines), health.py (what /health and the watchdog say).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from lakehoused import metrics, retention, systemd, timetravel
from lakehoused.config import Config, load_config
from lakehoused.daemon.converters import ConverterPool
from lakehoused.daemon.files import FileIngest
from lakehoused.daemon.health import BROKEN, Health, rfc3339
from lakehoused.daemon.scheduler import IN_FLIGHT, RETRYING, Scheduler, Ticket
from lakehoused.daemon.views import Views
from lakehoused.errors import ConfigError, Transient
from lakehoused.inbox import SourceFile, open_inbox
from lakehoused.ingest.pipeline import Outcome
from lakehoused.lakehouse import Lakehouse
from lakehoused.query import QueryEngine
from lakehoused.reload import plan as plan_reload
from lakehoused.server import BACKEND, make_app

log = logging.getLogger("lakehoused")

CONVERTERS = 2  # the machine's cores: one conversion each, the server shares them
PARALLEL = CONVERTERS + 2  # files in flight: some stage or wait for views while others convert
STOP_WAIT_S = 20  # how long SIGTERM lets the ingests in flight finish
RETENTION_SWEEP_S = 3600  # how often keep_days is applied to datasets that get no new files
STATUS_LIST = 100  # files listed by /status (oldest first); the counts cover them all
_HEALTH_CHECK_S = 0.5


class Daemon:
    """Everything `lakehoused run` runs, owned by the aiohttp app's lifecycle."""

    def __init__(self, config: Config, *, busy_timeout_s: float = 10.0) -> None:
        self.config = config
        self.health = Health()
        self.lakehouse = Lakehouse(config, busy_timeout_s=busy_timeout_s)
        self.catalog = self.lakehouse.catalog
        self.log = self.lakehouse.log
        # A crash left these behind; their locks died with their process.
        self.lakehouse.staging.remove_stale()
        self.engine = self.lakehouse.open_engine()
        self.metrics = metrics.Metrics()
        self.past = timetravel.PastStates(self.lakehouse)
        self.views = Views(self.lakehouse, self.engine, self.health, self.metrics.count_event)
        self.inbox = open_inbox(config.inbox)
        self.converters = ConverterPool(config, CONVERTERS)
        self.scheduler = Scheduler(
            FileIngest(
                self.lakehouse,
                self.inbox,
                self.converters,
                self.views,
                config.inbox.after_ingest,
            ),
            parallel=PARALLEL,
            health=self.health,
            on_done=self._done,
            on_retry=self.metrics.ingest_retried,
        )
        self.ready = False
        self.started = time.time()
        self.last_ingested: dict | None = None
        self.last_error: dict | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the converters, follow the log, then look at the inbox and watch it."""
        self._loop = asyncio.get_running_loop()
        self.views.bind(self._loop)
        self.converters.start()
        for loop in (self.views.follow(), self._watch_health(), self._sweep_retention()):
            self._spawn(loop, forever=True)
        await asyncio.to_thread(self.inbox.start, self._on_ready)
        self.ready = True
        log.info(
            "ready: inbox %s, store %s, catalog at seq %d",
            self.inbox.url,
            self.lakehouse.store.url,
            self.engine.catalog_seq,
        )

    async def stop(self) -> None:
        """Stop taking files, let ingests in flight finish (bounded), then stop everything."""
        log.info("stopping: no new files; waiting up to %d s for ingests in flight", STOP_WAIT_S)
        await asyncio.to_thread(self.inbox.stop)
        await self.scheduler.drain(STOP_WAIT_S)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.to_thread(self.converters.shutdown)
        # A converter stopped mid-warm-up (or an ingest abandoned) leaves its workspace.
        self.lakehouse.staging.remove_stale()
        self.past.close()
        self.engine.close()
        self.lakehouse.close()
        log.info("stopped")

    def _spawn(self, coro: Any, *, forever: bool = False) -> None:
        """Run `coro` as a task the daemon owns; a `forever` one ending breaks the daemon."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._ended, forever=forever))

    def _ended(self, task: asyncio.Task, *, forever: bool) -> None:
        """A background loop never ends by itself: if one does, the daemon is broken (and a
        one-off task's failure is logged with its traceback, not lost)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not forever:
            log.error("%s failed", task.get_coro(), exc_info=error)
        if forever:
            reason = f"{type(error).__name__}: {error}" if error else "it returned"
            self.health.broken("daemon", f"a background loop stopped ({task.get_coro()}): {reason}")

    def _on_ready(self, source: SourceFile) -> None:
        """Called from the inbox's thread: hand the file to the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.scheduler.offer, source)

    def _done(self, ticket: Ticket, outcome: Outcome | None) -> None:
        self.metrics.ingest_ended(ticket, outcome)
        if self.config.inbox.after_ingest != "keep" or outcome is None:
            self.inbox.forget(ticket.source)  # a kept file is handed over again only if changed
        if outcome is None:
            return
        summary = {
            "file": outcome.name,
            "status": outcome.status,
            "dataset": outcome.dataset,
            "seq": outcome.seq,
            "reason": outcome.reason,
            "at": outcome.event.at,
        }
        if outcome.status == "rejected":
            self.last_error = summary
        else:
            self.last_ingested = summary

    async def _watch_health(self) -> None:
        """Turn what the inbox reports into health: never only a log line."""
        while True:
            await asyncio.sleep(_HEALTH_CHECK_S)
            error = self.inbox.error
            if error is not None:
                self.health.broken("inbox", f"the inbox watcher stopped: {error}")
            elif self.inbox.problem is not None:
                self.health.degraded("inbox", self.inbox.problem)
            elif not any(t.state == RETRYING for t in self.scheduler.tickets()):
                self.health.recovered("inbox")

    async def _sweep_retention(self) -> None:
        """Expire versions that aged past `keep_days` in datasets nobody drops files into."""
        while True:
            await asyncio.sleep(RETENTION_SWEEP_S)
            try:
                lakehouse = self.lakehouse
                await asyncio.to_thread(
                    retention.expire_all, self.config, lakehouse.catalog, lakehouse.log
                )
            except Transient as e:
                self.health.degraded("log", str(e))
            except Exception as e:  # an unexpected one too: retention would stop silently
                self.health.broken("log", f"retention could not record its expiries: {e}")

    async def reload(self) -> None:
        """SIGHUP: take the settings that can change safely from the config file again, log
        what changed, and say which changes wait for a restart (reload.py)."""
        source = self.config.path
        if source is None:
            log.warning("SIGHUP: this daemon was not started from a config file; nothing to read")
            return
        try:
            loaded = await asyncio.to_thread(load_config, source)
        except ConfigError as e:
            log.error("SIGHUP: %s; the daemon keeps running with its settings as they were", e)
            return
        change = plan_reload(self.config, loaded)
        for item in change.applied:
            log.info("SIGHUP: applied %s", item.describe())
        for item in change.needs_restart:
            log.warning(
                "SIGHUP: %s needs a restart; until then it keeps its value", item.describe()
            )
        if not change.applied and not change.needs_restart:
            log.info("SIGHUP: %s unchanged", source)
        self.apply_config(change.config)

    def apply_config(self, config: Config) -> None:
        """Run with `config` from now on: one value, swapped in where it is read -- per-dataset
        options by the ingestor (per file), limits by /sql and the engine (per query)."""
        self.config = self.lakehouse.config = self.lakehouse.ingestor.config = config
        self.engine.timeout_s = config.server.query_timeout_s
        logging.getLogger().setLevel(config.server.log_level.upper())

    def engine_at(self, seq: int, sql: str) -> QueryEngine:
        """An engine showing the catalog as it was after `seq`, ready for `sql`."""
        return self.past.engine(seq, sql)

    def pin(self, names: set[str]) -> None:
        """Add the past versions a query names (`sales@3`) to the current engine."""
        timetravel.add_pins(self.engine, self.lakehouse, names)

    async def wait_for_seq(self, seq: int, timeout_s: float) -> bool:
        """Wait until the views show `seq` (read-your-writes); False on timeout."""
        return await self.views.wait_for(seq, timeout_s)

    # -- what the API shows ----------------------------------------------------------------

    def health_report(self) -> tuple[int, dict]:
        """The /health answer: 200 when serving (ok or degraded), 503 when broken."""
        state = self.health.state
        body = {
            "status": state,
            "catalog_seq": self.engine.catalog_seq,
            "uptime_s": round(time.time() - self.started, 3),
            "problems": [p.to_json() for p in self.health.problems()],
        }
        return (503 if state == BROKEN else 200), body

    def status(self) -> dict:
        """The backlog, like Snowpipe's pipe status: every file seen and not yet ended."""
        waiting = self.inbox.pending()
        tickets = self.scheduler.tickets()
        counts = {"waiting": len(waiting), "queued": 0, "in_flight": 0, "retrying": 0}
        for ticket in tickets:
            counts[ticket.state] += 1
        oldest = min([p.since for p in waiting] + [t.source.since for t in tickets], default=None)
        pending = [
            {"file": p.relpath.as_posix(), "state": p.state, "since": rfc3339(p.since)}
            for p in waiting[:STATUS_LIST]
        ]
        pending += [t.to_json() for t in tickets if t.state != IN_FLIGHT][
            : STATUS_LIST - len(pending)
        ]
        return {
            "health": self.health.state,
            "accepting": self.scheduler.accepting,
            "files_pending": sum(counts.values()),
            "counts": counts,
            "oldest_pending_s": None if oldest is None else round(time.time() - oldest, 3),
            "pending": pending,
            "pending_listed": len(pending),
            "in_flight": [self._flight(t) for t in tickets if t.state == IN_FLIGHT],
            "last_ingested": self.last_ingested,
            "last_error": self.last_error,
            "problems": [p.to_json() for p in self.health.problems()],
        }

    def _flight(self, ticket: Ticket) -> dict:
        name = ticket.source.name.as_posix()
        body = ticket.to_json()
        size = ticket.source.seen[0] if ticket.source.seen else None
        fraction = self.converters.progress.get(name, 0.0)
        body["started_at"] = rfc3339(ticket.started or time.time())
        if size is not None:
            body["bytes_total"] = size
            body["bytes_done"] = int(size * fraction)
        return body


# -- running it ---------------------------------------------------------------------------------


def build_app(config: Config, **options: Any) -> web.Application:
    """The aiohttp application with the daemon's whole lifecycle in its cleanup context."""
    daemon = Daemon(config, **options)
    app = make_app(daemon, config.server)
    metrics.install(app, daemon.metrics, daemon)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await daemon.start()
        yield
        await daemon.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def run(config: Config) -> int:
    """`lakehoused run`: serve until SIGTERM/SIGINT, then stop cleanly and return 0."""
    app = build_app(config)
    server = config.server
    daemon: Daemon = app[BACKEND]  # type: ignore[assignment]

    async def main() -> None:
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, server.host, server.port, reuse_address=True)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: daemon._spawn(daemon.reload()))
        for sock in site._server.sockets if site._server else ():  # type: ignore[attr-defined]
            host, port = sock.getsockname()[:2]
            log.info("serving on http://%s:%s", host, port)
            print(f"lakehoused: serving on http://{host}:{port}", flush=True)
        systemd.notify("READY=1")
        watchdog = asyncio.ensure_future(systemd.keep_alive(lambda: daemon.health.state != BROKEN))
        await stop.wait()
        systemd.notify("STOPPING=1")
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await runner.cleanup()

    log.info("starting lakehoused on %s", config.path)
    asyncio.run(main())
    return 0
