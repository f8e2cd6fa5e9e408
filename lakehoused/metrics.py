"""`GET /metrics`: what the daemon did and what it is doing, in Prometheus' text format.

Counters move where things happen: every event that reaches the query views (this daemon's
and those of a `lakehoused ingest` beside it, each once), every ingest that ends, every
retry, every `/sql` request (a middleware). Gauges -- the catalog seq, the backlog, the
converter restarts -- are read from the daemon when Prometheus scrapes, so they cannot
drift from what `/status` says. Each daemon has a registry of its own (not the process-wide
default), so two apps in one test process never share counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from lakehoused.errors import LakehousedError, StoreError
from lakehoused.log import StoredEvent

if TYPE_CHECKING:  # the daemon imports this module; this one only reads it at scrape time
    from lakehoused.daemon import Daemon
    from lakehoused.daemon.scheduler import Ticket
    from lakehoused.ingest.pipeline import Outcome

QUERY_PATH = "/sql"
_INGEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_HEALTH_STATES = ("ok", "degraded", "broken")
# Where query.py's JSON answer names its row count: after the rows, in the last bytes.
_ROW_COUNT_KEY = b'"row_count":'


class Metrics:
    """The daemon's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.files_ingested = Counter(
            "lakehoused_files_ingested",
            "Files registered as a new version of a dataset.",
            ["dataset"],
            registry=r,
        )
        self.files_rejected = Counter(
            "lakehoused_files_rejected",
            "Files rejected (quarantined with their reason); dataset is empty when unknown.",
            ["dataset"],
            registry=r,
        )
        self.files_duplicate = Counter(
            "lakehoused_files_duplicate",
            "Files whose bytes a dataset's current version already held.",
            ["dataset"],
            registry=r,
        )
        self.bytes_ingested = Counter(
            "lakehoused_ingested_bytes",
            "Bytes of source files registered.",
            ["dataset"],
            registry=r,
        )
        self.rows_ingested = Counter(
            "lakehoused_ingested_rows", "Rows of source files registered.", ["dataset"], registry=r
        )
        self.events = Counter(
            "lakehoused_events",
            "Events brought into the query views, by type.",
            ["type"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "lakehoused_ingest_duration_seconds",
            "Seconds from a file's handover to a converter to its end (registered, "
            "duplicate or rejected), for the daemon's own ingests.",
            buckets=_INGEST_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "lakehoused_ingest_retries",
            "Ingest tries that failed for a passing reason and will be retried, by error code.",
            ["reason"],
            registry=r,
        )
        self.store_errors = Counter(
            "lakehoused_store_errors",
            "Ingest tries the object store failed (unreachable or refusing writes).",
            registry=r,
        )
        self.queries = Counter(
            "lakehoused_queries",
            "POST/GET /sql requests, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.query_seconds = Histogram(
            "lakehoused_query_duration_seconds",
            "Seconds to answer a /sql request, streaming included.",
            buckets=_QUERY_BUCKETS,
            registry=r,
        )
        self.rows_returned = Counter(
            "lakehoused_query_rows_returned",
            "Rows sent in /sql answers (JSON rows after the max_rows cut; every streamed row).",
            registry=r,
        )

    # -- what the daemon tells it ------------------------------------------------------------

    def count_event(self, event: StoredEvent) -> None:
        """One event that reached the views (each event once, whichever process wrote it)."""
        self.events.labels(event.type).inc()
        dataset = event.dataset or ""
        data = event.data
        if event.type == "dataset.registered":
            self.files_ingested.labels(dataset).inc()
            self.bytes_ingested.labels(dataset).inc(_number(data.get("source", {}), "bytes"))
            self.rows_ingested.labels(dataset).inc(_number(data.get("object", {}), "rows"))
        elif event.type == "ingest.rejected":
            self.files_rejected.labels(dataset).inc()
        elif event.type == "ingest.duplicate":
            self.files_duplicate.labels(dataset).inc()

    def ingest_ended(self, ticket: Ticket, outcome: Outcome | None) -> None:
        """A file the daemon took on has ended; how long its last try took."""
        if outcome is not None and ticket.started is not None:
            self.ingest_seconds.observe(max(time.time() - ticket.started, 0.0))

    def ingest_retried(self, ticket: Ticket, error: BaseException) -> None:
        """A try failed for a reason that passes; the file waits for the next."""
        code = error.code if isinstance(error, LakehousedError) else "internal"
        self.retries.labels(code).inc()
        if isinstance(error, StoreError):
            self.store_errors.inc()

    def query_answered(self, status: int, seconds: float, body: bytes | None) -> None:
        """One /sql request answered; `body` is the JSON answer when it was one."""
        self.queries.labels(str(status)).inc()
        self.query_seconds.observe(seconds)
        if status == 200 and body is not None:
            rows = json_row_count(body)
            if rows:
                self.rows_returned.inc(rows)


def json_row_count(body: bytes) -> int:
    """The `row_count` of a /sql JSON answer, read from its end (no parse of the rows).

    The top-level key follows the rows, so searching backwards finds it before any key of
    the same name inside a row's value.
    """
    at = body.rfind(_ROW_COUNT_KEY)
    if at < 0:
        return 0
    digits = body[at + len(_ROW_COUNT_KEY) : at + len(_ROW_COUNT_KEY) + 20]
    end = 0
    while end < len(digits) and digits[end : end + 1].isdigit():
        end += 1
    return int(digits[:end]) if end else 0


def _number(data: Any, key: str) -> float:
    value = data.get(key) if isinstance(data, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class DaemonCollector(Collector):
    """What the daemon is doing now, read at scrape time: never a second bookkeeping."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Any]:
        """The gauges and the counters the daemon keeps itself."""
        daemon = self.daemon
        yield _gauge(
            "lakehoused_catalog_seq",
            "The seq of the last event the views show.",
            daemon.engine.catalog_seq,
        )
        status = daemon.status()
        yield _gauge(
            "lakehoused_files_pending",
            "Files seen and not yet ended (waiting, queued, in flight, retrying).",
            status["files_pending"],
        )
        by_state = GaugeMetricFamily(
            "lakehoused_files_pending_by_state", "Files pending, by state.", labels=["state"]
        )
        for state, count in status["counts"].items():
            by_state.add_metric([state], count)
        yield by_state
        yield _gauge(
            "lakehoused_oldest_pending_seconds",
            "Age of the oldest file pending (0 when none is).",
            status["oldest_pending_s"] or 0,
        )
        restarts = CounterMetricFamily(
            "lakehoused_converter_restarts", "Converter processes that died and were replaced."
        )
        restarts.add_metric([], daemon.converters.restarts)
        yield restarts
        health = GaugeMetricFamily(
            "lakehoused_health", "1 for the daemon's health state now.", labels=["state"]
        )
        for state in _HEALTH_STATES:
            health.add_metric([state], 1 if status["health"] == state else 0)
        yield health
        yield _gauge(
            "lakehoused_uptime_seconds",
            "Seconds since the daemon started.",
            time.time() - daemon.started,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


# -- HTTP ----------------------------------------------------------------------------------

METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def query_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Time every /sql request and count it by status (outermost: it sees every answer)."""
    if request.path != QUERY_PATH:
        return await handler(request)
    started = time.perf_counter()
    status, body = 500, None
    try:
        response = await handler(request)
        status = response.status
        if isinstance(response, web.Response) and isinstance(response.body, bytes):
            body = response.body if response.content_type == "application/json" else None
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        request.app[METRICS].query_answered(status, time.perf_counter() - started, body)


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text exposition format."""
    registry = request.app[METRICS].registry
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install(app: web.Application, metrics: Metrics, daemon: Daemon) -> None:
    """Serve /metrics on `app` (behind the token, like every route but /health), time /sql."""
    metrics.registry.register(DaemonCollector(daemon))
    app[METRICS] = metrics
    app.middlewares.insert(0, query_metrics)
    app.router.add_get("/metrics", handle_metrics)


def count_rows(request: web.Request, rows: int) -> None:
    """Count the rows of a streamed answer once it is sent, on an app that serves metrics."""
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.rows_returned.inc(rows)
