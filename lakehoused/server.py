"""The HTTP API (DESIGN §6): SQL, datasets, events, health and ingest status, on aiohttp.

Nothing here blocks the event loop: queries start, stream and encode in a thread pool,
and the catalog is read under the log's lock from threads too.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import duckdb
import orjson
from aiohttp import web

from lakehoused import __version__, events, metrics, query, search, timetravel
from lakehoused import web as page
from lakehoused.catalog import Catalog
from lakehoused.config import Config, ServerConfig
from lakehoused.errors import BadRequest, LakehousedError, UnknownDataset
from lakehoused.log import EventLog
from lakehoused.query.sandbox import query_error

LOOP_SQL_CHARS = 16 << 10  # SQL longer than this is never parsed on the event loop
MAX_BODY = 1 << 20  # a SQL request larger than 1 MiB is refused with 413
MIN_SEQ_WAIT_S = 10.0  # the longest a request waits for the catalog to reach min_seq
QUERY_THREADS = 16  # queries in flight at once; DuckDB parallelises within each too
EVENTS_LIMIT = 1000
DISCONNECT_POLL_S = 0.05  # how often a waiting request looks whether its client is still there

log = logging.getLogger(__name__)
T = TypeVar("T")

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

    def engine_at(self, seq: int, sql: str) -> query.QueryEngine:
        """An engine showing the catalog as it was after `seq`, ready for `sql` (time travel)."""

    def pin(self, names: set[str]) -> None:
        """Add the past versions `sql` names (`sales@3`) to the current engine."""


BACKEND = web.AppKey("backend", Backend)
SETTINGS = web.AppKey("settings", ServerConfig)
POOL = web.AppKey("pool", ThreadPoolExecutor)


def _error(
    status: int, code: str, message: str, seq: int | None = None, **more: str
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **more}}
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
    except duckdb.Error as e:  # a driver error no layer below translated
        error = query_error(e)
        response = _error(error.status, error.code, str(error))
    except web.HTTPRequestEntityTooLarge:
        response = _error(413, "too_large", f"request body over {MAX_BODY} bytes")
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "http")
        response = _error(e.status, code, e.reason)
    except _ClientGone:
        # Nobody is left to read an answer; aiohttp drops this one with the connection.
        return web.Response(status=499)
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s in %s %s", incident, request.method, request.path)
        response = _error(
            500,
            "internal",
            f"internal error {incident}; the daemon's log has its details under that id",
            id=incident,
        )
    if not response.prepared:
        response.headers.setdefault("X-Catalog-Seq", str(backend.engine.catalog_seq))
    return response


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With an API token configured, every route but /health and the page (which holds no
    data and asks for the token itself) needs `Authorization: Bearer`."""
    public = request.path == "/health" or page.is_public(request.path)
    if not public and not _authorized(request):
        return _error(401, "unauthorized", "missing or wrong API token (Authorization: Bearer …)")
    return await handler(request)


def _authorized(request: web.Request) -> bool:
    """Whether the request may see data: no token is set, or it carries the right one."""
    token = request.app[SETTINGS].token
    if not token:
        return True
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def _ready(backend: Backend) -> None:
    if not backend.ready:
        raise _NotReady()


class _NotReady(LakehousedError):
    """The catalog is not loaded yet."""

    status = 503
    code = "not_ready"

    def __init__(self, message: str = "the catalog is still loading; retry shortly") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class SqlRequest:
    """What a /sql request asks for, checked."""

    sql: str
    format: str | None  # None: by the Accept header
    max_rows: int | None
    min_seq: int | None
    as_of: int | None = None


_BODY_KEYS = ("sql", "format", "max_rows", "min_seq", "as_of")
_PARAMS = ("q", "sql", "format", "max_rows", "min_seq", "as_of")
_BIGGEST = 2**63 - 1


class _Token(str):
    """A JSON number or constant that is not an integer, kept as written for the message."""


async def _sql_request(request: web.Request) -> SqlRequest:
    """The SQL and its options from a POST body (JSON or text) or a GET query string; a
    BadRequest naming the field for anything else."""
    params = request.query
    for name in params:
        if name not in _PARAMS or (request.method == "POST" and name in ("q", "sql")):
            allowed = _PARAMS if request.method == "GET" else _PARAMS[2:]
            raise BadRequest(f"unknown parameter {name!r}; /sql takes {', '.join(allowed)}")
    if request.method == "GET":
        sql = params.get("q", params.get("sql"))
        if sql is None:
            raise BadRequest("q: missing; send GET /sql?q=SELECT+...")
        options: Mapping[str, Any] = params
    elif request.content_type == "application/json":
        body = _json_body(_text(await request.read()))
        if not isinstance(body, dict):
            raise BadRequest('body: must be a JSON object, {"sql": "SELECT ..."}')
        for key in body:
            if key not in _BODY_KEYS:
                raise BadRequest(f"body: unknown key {key!r}; the keys are {', '.join(_BODY_KEYS)}")
        sql = body.get("sql")
        if not isinstance(sql, str):
            raise BadRequest(f"sql: must be a string of SQL; got {_shown(sql)}")
        if not sql.isascii():
            try:
                sql.encode("utf-8")
            except UnicodeEncodeError as e:  # a lone surrogate escape, "\ud800"
                raise BadRequest(
                    f"sql: character {e.start} is a lone surrogate, which is not text"
                ) from None
        if "format" in body and not isinstance(body["format"], str):
            raise BadRequest(
                f"format: must be one of {', '.join(query.FORMATS)}; got {_shown(body['format'])}"
            )
        options = body
    else:
        sql = _text(await request.read())
        options = params
    text = options is params  # a query string holds only text: digits stand for a number
    return SqlRequest(
        sql,
        options.get("format"),
        _whole(options, "max_rows", low=1, text=text),
        _whole(options, "min_seq", low=0, text=text),
        _whole(options, "as_of", low=0, text=text),
    )


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"body: not UTF-8 (byte {e.start} is {data[e.start]:#04x}); send the SQL as UTF-8"
        ) from None


def _json_body(text: str) -> Any:
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None  # maybe NaN or Infinity: the parser below names them
    else:
        if not isinstance(body, dict) or all(
            type(body.get(k, 0)) is int for k in ("max_rows", "min_seq")
        ):
            return body
    try:
        # Non-integers are kept as written, so that a wrong option is named as it was sent.
        return json.loads(text, parse_float=_Token, parse_constant=_Token)
    except json.JSONDecodeError as e:
        raise BadRequest(f"body: not valid JSON: {e}") from None


def _shown(value: Any) -> str:
    if isinstance(value, _Token):
        return str(value)
    return json.dumps(value)


def _whole(options: Mapping[str, Any], name: str, *, low: int, text: bool) -> int | None:
    """An optional whole-number option: a JSON integer, or ASCII digits in a query string."""
    if name not in options:
        return None
    value = options[name]
    if text:
        number = int(value) if value.isascii() and value.isdigit() else None
    else:
        number = value if type(value) is int else None
    if number is None or not low <= number <= _BIGGEST:
        raise BadRequest(
            f"{name}: must be a whole number from {low} to {_BIGGEST}; got {_shown(value)}"
        )
    return number


def _choose_format(explicit: str | None, accept: str) -> str:
    if explicit is not None:
        if explicit not in FORMATS:
            raise BadRequest(f"format: must be one of {', '.join(FORMATS)}; got {explicit!r}")
        return explicit
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


async def handle_sql(request: web.Request) -> web.StreamResponse:
    """POST /sql and GET /sql?q=: one SELECT, answered in json, ndjson, csv or arrow.

    An answer known to the result cache, or a revalidation its ETag settles, is answered
    on the event loop; so is a JSON query whose last run took well under a millisecond (a
    thread hand-off costs as much). Anything else runs in the query pool, and is cancelled
    if the client goes away. A query slower than `server.slow_query_ms` is logged.
    """
    started = time.perf_counter()
    ask: SqlRequest | None = None
    try:
        ask = await _sql_request(request)
        return await _answer(request, ask)
    finally:
        limit_ms = request.app[BACKEND].config.server.slow_query_ms
        took_ms = (time.perf_counter() - started) * 1000
        if ask is not None and limit_ms and took_ms > limit_ms:
            log.warning(
                "slow query: %.0f ms (over server.slow_query_ms = %d): %s",
                took_ms,
                limit_ms,
                " ".join(ask.sql.split())[:500],
                extra={"seq": request.app[BACKEND].engine.catalog_seq},
            )


async def _answer(request: web.Request, ask: SqlRequest) -> web.StreamResponse:
    """The answer to a checked /sql request."""
    backend, pool = request.app[BACKEND], request.app[POOL]
    settings = backend.config.server  # its limits now: a reload may have changed them
    _ready(backend)
    fmt = _choose_format(ask.format, request.headers.get("Accept", ""))
    max_rows = min(ask.max_rows or settings.max_rows, settings.max_rows)
    engine = backend.engine
    if ask.min_seq is not None and ask.min_seq > engine.catalog_seq:
        wait_s = min(MIN_SEQ_WAIT_S, settings.query_timeout_s)
        if not await backend.wait_for_seq(ask.min_seq, wait_s):
            raise _NotReady(
                f"the catalog has not reached seq {ask.min_seq} within {wait_s:g} s "
                f"(it is at {engine.catalog_seq})"
            )
    past = ask.as_of is not None  # an answer about a past state never changes
    # Parsing costs time in the length of the SQL: a long statement is looked at in the
    # pool, never on the event loop (800 KB of SQL took over a second to parse).
    short = len(ask.sql) <= LOOP_SQL_CHARS
    if past:
        engine = await asyncio.to_thread(backend.engine_at, ask.as_of, ask.sql)
    elif "@" in ask.sql:
        if short:
            found = timetravel.pinned_names(ask.sql)
        else:
            found = await asyncio.to_thread(timetravel.pinned_names, ask.sql)
        if found - engine.views():
            await asyncio.to_thread(backend.pin, found)
    tags = request.headers.get("If-None-Match")
    probe = engine.probe(ask.sql, fmt, max_rows) if short else None
    if probe is not None:
        if tags and probe.etag and _matches(tags, probe.etag, star=False):
            return _not_modified(probe.etag, probe.catalog_seq, past)
        if probe.answer is not None:
            return _send(probe.answer, fmt, tags, past)
        if probe.quick:
            answer = engine.answer(ask.sql, fmt, max_rows)
            assert isinstance(answer, query.Answer)
            return _send(answer, fmt, tags, past)
    cancel = query.Cancel()
    run = functools.partial(engine.answer, ask.sql, fmt, max_rows, cancel=cancel)
    result = await _in_thread(request, pool, cancel.set, run)
    if isinstance(result, query.Stream):
        return await _stream(request, pool, result, fmt, past)
    return _send(result, fmt, tags, past)


def _matches(tags: str, etag: str, *, star: bool) -> bool:
    """If-None-Match's weak comparison: any tag in the list, weak or strong, or `*`."""
    opaque = etag.removeprefix("W/")
    for tag in tags.split(","):
        tag = tag.strip()
        if tag.removeprefix("W/") == opaque or (star and tag == "*"):
            return True
    return False


IMMUTABLE = "public, max-age=31536000, immutable"
"""Cache-Control of an answer about a past state (as_of): it can never change."""


def _not_modified(etag: str, seq: int, past: bool = False) -> web.Response:
    cache = IMMUTABLE if past else "no-cache"
    headers = {"ETag": etag, "X-Catalog-Seq": str(seq), "Cache-Control": cache}
    return web.Response(status=304, headers={**headers, "Vary": "Accept"})


def _answer_headers(
    answer: query.Answer | query.Stream, fmt: str, past: bool = False
) -> dict[str, str]:
    headers = {
        "Content-Type": FORMATS[fmt],
        "X-Catalog-Seq": str(answer.catalog_seq),
        "X-Cache": answer.cache,
        "Vary": "Accept",
    }
    if answer.etag is None:
        headers["Cache-Control"] = "no-store"  # not a function of the data: never reuse it
    else:
        headers["ETag"] = answer.etag
        # Reusable once revalidated by its ETag; an answer about a past state, for ever.
        headers["Cache-Control"] = IMMUTABLE if past else "no-cache"
    return headers


def _send(answer: query.Answer, fmt: str, tags: str | None, past: bool = False) -> web.Response:
    if tags and answer.etag and _matches(tags, answer.etag, star=True):
        return _not_modified(answer.etag, answer.catalog_seq, past)
    return web.Response(body=answer.body, headers=_answer_headers(answer, fmt, past))


class _ClientGone(Exception):
    """The client closed the connection: there is nobody to answer."""


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _in_thread(
    request: web.Request,
    pool: ThreadPoolExecutor,
    cancel: Callable[[], None],
    work: Callable[[], T],
) -> T:
    """`work()` in the query pool; `cancel()` as soon as the client is seen to go away.

    aiohttp cancels a handler on disconnect only if its runner was built to, so the
    connection is also looked at while waiting. Either way, this returns only once `work`
    is over: nothing else may touch its cursor before.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(pool, work)
    gone = False
    try:
        while not future.done():
            await asyncio.wait((future,), timeout=DISCONNECT_POLL_S)
            if not future.done() and _gone(request):
                gone = True
                cancel()  # at every poll: an interrupt just before DuckDB starts is lost
    except asyncio.CancelledError:
        while not future.done():  # the handler is cancelled when its client hangs up
            cancel()
            await asyncio.wait((future,), timeout=DISCONNECT_POLL_S)
        _discard(future)
        raise
    if gone:
        _discard(future)
        raise _ClientGone()
    return future.result()


def _discard(future: asyncio.Future) -> None:
    # A stream that started after its client left: release its cursor.
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        if isinstance(result, query.Stream):
            result.close()


async def _stream(
    request: web.Request,
    pool: ThreadPoolExecutor,
    stream: query.Stream,
    fmt: str,
    past: bool = False,
) -> web.StreamResponse:
    """Send chunks as they are produced; the first one is pulled before the headers go out,
    so an error that shows up at once still gets a JSON error status."""
    headers = _answer_headers(stream, fmt, past)
    response: web.StreamResponse | None = None
    try:
        chunk = await _in_thread(request, pool, stream.cancel, lambda: next(stream, None))
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        while chunk is not None:
            await response.write(chunk)
            chunk = await _in_thread(request, pool, stream.cancel, lambda: next(stream, None))
        await response.write_eof()
        metrics.count_rows(request, stream.rows)
        return response
    except ConnectionError:
        stream.cancel()  # the client went away while a chunk was being sent
        raise _ClientGone() from None
    except LakehousedError as e:
        if response is None:
            raise
        # The status went out with the first chunk: all that is left is to cut the
        # connection, so the client sees an unfinished chunked body rather than an end.
        log.warning("%s %s: stream cut after it started: %s", request.method, request.path, e)
        if request.transport is not None:
            request.transport.close()
        raise _ClientGone() from None
    finally:
        stream.close()


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
        raise BadRequest(f"order: must be asc or desc; got {order!r}")
    after = _whole(params, "after", low=0, text=True) or 0
    before = _whole(params, "before", low=1, text=True)
    limit = min(_whole(params, "limit", low=1, text=True) or 100, EVENTS_LIMIT)
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
    if not _authorized(request):
        # Open to a load balancer's probe, but the reasons (paths, errors) need the token.
        body["problems"] = [{k: v for k, v in p.items() if k != "reason"} for p in body["problems"]]
    return web.json_response(body, status=status)


async def handle_status(request: web.Request) -> web.Response:
    """GET /status: files pending, oldest pending, ingest in flight, last ingested, last error."""
    backend = request.app[BACKEND]
    body = backend.status() | {"catalog_seq": backend.engine.catalog_seq}
    return web.json_response(body, dumps=_dumps)


def install_event_loop() -> None:
    """Serve on uvloop where it is installed: measured ~30 % faster at the HTTP floor."""
    try:
        import uvloop
    except ImportError:  # not on this platform: asyncio's own loop serves as well
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


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
