"""The HTTP API (DESIGN §6): SQL, datasets, events, health and ingest status, on aiohttp.

Nothing here blocks the event loop: queries start, stream and encode in a thread pool,
and the catalog is read under the log's lock from threads too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiohttp import web

from lakehoused import __version__, events, metrics, query, search
from lakehoused import web as page
from lakehoused.catalog import Catalog
from lakehoused.config import Config, ServerConfig
from lakehoused.errors import LakehousedError, QueryError, UnknownDataset
from lakehoused.log import EventLog

MAX_BODY = 1 << 20  # a SQL request larger than 1 MiB is refused with 413
MIN_SEQ_WAIT_S = 10.0  # the longest a request waits for the catalog to reach min_seq
QUERY_THREADS = 16  # queries in flight at once; DuckDB parallelises within each too
EVENTS_LIMIT = 1000

FORMATS = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ACCEPT = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
    "application/vnd.apache.arrow.stream": "arrow",
}


class Backend(Protocol):
    """What the server needs from the daemon."""

    ready: bool
    config: Config  # the server's limits are read from it per request (SIGHUP swaps it)
    engine: query.QueryEngine
    catalog: Catalog
    log: EventLog

    def status(self) -> dict:
        """The ingest backlog for /status."""

    def health_report(self) -> tuple[int, dict]:
        """The /health status code and body."""

    async def wait_for_seq(self, seq: int, timeout_s: float) -> bool:
        """Wait until the views show `seq`; False on timeout."""


BACKEND = web.AppKey("backend", Backend)
SETTINGS = web.AppKey("settings", ServerConfig)
POOL = web.AppKey("pool", ThreadPoolExecutor)


def _error(status: int, code: str, message: str, seq: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if seq is not None:
        body["catalog_seq"] = seq
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON with a fitting status; every response names the catalog seq."""
    backend = request.app[BACKEND]
    try:
        response = await handler(request)
    except LakehousedError as e:
        response = _error(e.status, e.code, str(e))
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, "too_large", f"request body over {MAX_BODY} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http")
        response = _error(e.status, code, e.reason)
    if not response.prepared:
        response.headers.setdefault("X-Catalog-Seq", str(backend.engine.catalog_seq))
    return response


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With an API token configured, every route but /health and the page (which holds no
    data and asks for the token itself) needs `Authorization: Bearer`."""
    token = request.app[SETTINGS].token
    if token and request.path != "/health" and not page.is_public(request.path):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _error(
                401, "unauthorized", "missing or wrong API token (Authorization: Bearer …)"
            )
    return await handler(request)


def _ready(backend: Backend) -> None:
    if not backend.ready:
        raise _NotReady()


class _NotReady(LakehousedError):
    """The catalog is not loaded yet."""

    status = 503
    code = "not_ready"

    def __init__(self, message: str = "the catalog is still loading; retry shortly") -> None:
        super().__init__(message)


async def _sql_request(request: web.Request) -> tuple[str, str | None, dict]:
    """(sql, format, options) from a POST body (JSON or text/plain) or GET query string."""
    if request.method == "GET":
        params = dict(request.query)
        sql = params.pop("q", None) or params.pop("sql", None)
        return sql or "", params.pop("format", None), params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise QueryError(f"request body is not valid JSON: {e}") from e
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            raise QueryError('send {"sql": "SELECT ..."} (or the SQL as text/plain)')
        options = {k: v for k, v in body.items() if k not in ("sql", "format")}
        return body["sql"], body.get("format"), options
    sql = await request.text()
    params = dict(request.query)
    return sql, params.pop("format", None), params


def _choose_format(explicit: str | None, accept: str) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise QueryError(f"format must be one of {', '.join(FORMATS)}; got {explicit!r}")
        return explicit
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


def _int_option(options: dict, name: str, default: int | None, *, low: int = 0) -> int | None:
    value = options.get(name, default)
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise QueryError(f"{name} must be an integer; got {value!r}") from None
    if number < low:
        raise QueryError(f"{name} must be at least {low}; got {number}")
    return number


async def handle_sql(request: web.Request) -> web.StreamResponse:
    """POST /sql and GET /sql?q=: one SELECT, answered in json, ndjson, csv or arrow."""
    backend, pool = request.app[BACKEND], request.app[POOL]
    settings = backend.config.server  # its limits now: a reload may have changed them
    _ready(backend)
    sql, explicit, options = await _sql_request(request)
    fmt = _choose_format(explicit, request.headers.get("Accept", ""))
    max_rows = min(_int_option(options, "max_rows", settings.max_rows, low=1), settings.max_rows)
    min_seq = _int_option(options, "min_seq", None)
    wait_s = min(MIN_SEQ_WAIT_S, settings.query_timeout_s)
    if min_seq is not None and not await backend.wait_for_seq(min_seq, wait_s):
        raise _NotReady(
            f"the catalog has not reached seq {min_seq} within {wait_s:g} s "
            f"(it is at {backend.engine.catalog_seq})"
        )
    loop = asyncio.get_running_loop()
    if fmt == "json":
        answer = await loop.run_in_executor(pool, backend.engine.execute_json, sql, max_rows)
        return web.Response(
            body=answer.body,
            content_type="application/json",
            headers={"X-Catalog-Seq": str(answer.catalog_seq)},
        )
    result = await loop.run_in_executor(pool, backend.engine.execute, sql)
    metrics.count_streamed_rows(request, result)
    headers = {"X-Catalog-Seq": str(result.catalog_seq)}
    chunks = {"ndjson": query.iter_ndjson, "csv": query.iter_csv, "arrow": query.iter_arrow}[fmt]
    return await _stream(request, pool, chunks(result), FORMATS[fmt], headers, result.close)


async def _stream(
    request: web.Request,
    pool: ThreadPoolExecutor,
    chunks: Iterator[bytes],
    content_type: str,
    headers: dict[str, str],
    close: Callable[[], None],
) -> web.StreamResponse:
    """Send chunks as they are produced; the first one is pulled before the headers go out,
    so an error that shows up at once still gets a JSON error status."""
    loop = asyncio.get_running_loop()
    try:
        first = await loop.run_in_executor(pool, next, chunks, None)
        response = web.StreamResponse(headers={**headers, "Content-Type": content_type})
        await response.prepare(request)
        chunk = first
        while chunk is not None:
            await response.write(chunk)
            chunk = await loop.run_in_executor(pool, next, chunks, None)
        await response.write_eof()
        return response
    finally:
        close()


async def handle_datasets(request: web.Request) -> web.Response:
    """GET /datasets: every dataset; the ETag is the catalog seq."""
    backend = request.app[BACKEND]
    _ready(backend)
    seq = backend.engine.catalog_seq
    etag = f'"{seq}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    datasets = await asyncio.to_thread(backend.catalog.summaries)
    body = {"datasets": datasets, "catalog_seq": seq}
    return web.json_response(body, headers={"ETag": etag}, dumps=_dumps)


async def handle_dataset(request: web.Request) -> web.Response:
    """GET /datasets/{name}: one dataset with its parts and versions."""
    backend = request.app[BACKEND]
    _ready(backend)
    name = request.match_info["name"]
    seq = backend.engine.catalog_seq

    def read() -> tuple[Any, list]:
        return backend.catalog.dataset(name), backend.catalog.versions(name)

    dataset, versions = await asyncio.to_thread(read)
    if dataset is None:
        raise UnknownDataset(f"no dataset named {name!r}; GET /datasets lists them")
    body = dataset.to_json() | {"versions": [v.to_json() for v in versions], "catalog_seq": seq}
    return web.json_response(body, dumps=_dumps)


async def handle_history(request: web.Request) -> web.Response:
    """GET /datasets/{name}/history: every version with when, why, rows, sources, schema diff."""
    backend = request.app[BACKEND]
    _ready(backend)
    name = request.match_info["name"]
    entries = await asyncio.to_thread(backend.catalog.history, name)
    if not entries:
        raise UnknownDataset(f"no dataset named {name!r}; GET /datasets lists them")
    body = {
        "name": name,
        "versions": [e.to_json() for e in entries],
        "catalog_seq": backend.engine.catalog_seq,
    }
    return web.json_response(body, dumps=_dumps)


async def handle_events(request: web.Request) -> web.Response:
    """GET /events: the log in order (`after`), or newest first (`order=desc`, `before`),
    filtered by `type` and `dataset`, searched by `q`."""
    backend = request.app[BACKEND]
    params = dict(request.query)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise QueryError(f"order must be asc or desc; got {order!r}")
    after = _int_option(params, "after", 0)
    before = _int_option(params, "before", None, low=1)
    limit = min(_int_option(params, "limit", 100, low=1), EVENTS_LIMIT)
    found = await asyncio.to_thread(
        search.find_events,
        backend.log,
        after=after,
        before=before,
        limit=limit + 1,  # one more than asked: whether another page follows
        newest_first=order == "desc",
        type=params.get("type") or None,
        dataset=params.get("dataset") or None,
        text=params.get("q"),
    )
    more, found = len(found) > limit, found[:limit]
    # `summary` is the line the logs and `lakehoused log` show for it.
    body: dict[str, Any] = {
        "events": [e.to_json() | {"summary": events.describe(e)} for e in found]
    }
    if order == "desc":
        body["next_before"] = found[-1].seq if more else None
    else:
        body["next_after"] = found[-1].seq if found else after
    body["catalog_seq"] = backend.engine.catalog_seq
    return web.json_response(body, dumps=_dumps)


async def handle_health(request: web.Request) -> web.Response:
    """GET /health: 200 when serving (ok or degraded), 503 while loading or when broken."""
    backend = request.app[BACKEND]
    if not backend.ready:
        return _error(503, "not_ready", "the catalog is still loading")
    status, body = backend.health_report()
    body["version"] = __version__
    return web.json_response(body, status=status)


async def handle_status(request: web.Request) -> web.Response:
    """GET /status: files pending, oldest pending, ingest in flight, last ingested, last error."""
    backend = request.app[BACKEND]
    body = backend.status() | {"catalog_seq": backend.engine.catalog_seq}
    return web.json_response(body, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def make_app(backend: Backend, settings: ServerConfig) -> web.Application:
    """The aiohttp application over a backend (the daemon, or a test's own)."""
    # The token check only where there is a token: each middleware costs every request.
    middlewares = [errors_middleware, auth_middleware] if settings.token else [errors_middleware]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[BACKEND] = backend
    app[SETTINGS] = settings
    app[POOL] = ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="query")

    async def pool_lifecycle(app: web.Application) -> AsyncIterator[None]:
        yield
        app[POOL].shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(pool_lifecycle)
    app.router.add_post("/sql", handle_sql)
    app.router.add_get("/sql", handle_sql)
    app.router.add_get("/datasets", handle_datasets)
    app.router.add_get("/datasets/{name}", handle_dataset)
    app.router.add_get("/datasets/{name}/history", handle_history)
    app.router.add_get("/events", handle_events)
    app.router.add_get("/health", handle_health)
    app.router.add_get("/status", handle_status)
    page.add_routes(app)
    return app
