"""A client that goes away stops its query: the cursor is interrupted, whole or streaming.

The daemon runs as `lakehoused run` builds it (aiohttp does not cancel handlers there), on a
real socket; a raw client sends a query that would run for minutes, then hangs up.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import ClientSession, web

from lakehoused.config import load_config
from lakehoused.daemon import build_app
from lakehoused.server import BACKEND

ENDLESS = "SELECT sum(a.range * b.range) AS s FROM range(1000000) a, range(1000000) b"
ENDLESS_ROWS = "SELECT a.range AS n FROM range(1000000) a, range(1000000) b"


@pytest.fixture
async def served(make_config):
    """The daemon's app on 127.0.0.1, served the way `lakehoused run` serves it."""
    config = load_config(make_config(server="query_timeout_s = 60"))
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield app, port
    await runner.cleanup()


async def until(predicate, timeout_s: float) -> float:
    """Seconds until `predicate()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def request(port: int, sql: str, fmt: str = "json") -> bytes:
    body = json.dumps({"sql": sql, "format": fmt}).encode()
    head = (
        f"POST /sql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def test_a_client_that_hangs_up_stops_its_query(served):
    app, port = served
    engine = app[BACKEND].engine
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(port, ENDLESS))
    await writer.drain()
    await until(lambda: engine.running == 1, 10)
    await asyncio.sleep(0.2)  # well into the query
    writer.close()
    stopped = await until(lambda: engine.running == 0, 5)
    assert stopped < 2 and engine.cancelled == 1  # not the 60 s time limit
    async with ClientSession() as client:  # the daemon serves on
        r = await client.post(f"http://127.0.0.1:{port}/sql", json={"sql": "SELECT 42 AS x"})
        assert (await r.json())["rows"] == [[42]]


async def test_a_client_that_hangs_up_mid_stream_stops_its_query(served):
    app, port = served
    engine = app[BACKEND].engine
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request(port, ENDLESS_ROWS, "csv"))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head
    assert len(await reader.read(65536)) > 0  # rows are flowing
    assert engine.running == 1
    writer.close()
    stopped = await until(lambda: engine.running == 0, 5)
    assert stopped < 2 and engine.cancelled == 1


async def test_a_cancelled_handler_stops_its_query(aiohttp_client, make_config):
    """The same through aiohttp's handler cancellation (its test server turns it on)."""
    config = load_config(make_config(server="query_timeout_s = 60"))
    client = await aiohttp_client(build_app(config))
    engine = client.server.app[BACKEND].engine
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(request(client.port, ENDLESS))
    await writer.drain()
    await until(lambda: engine.running == 1, 10)
    writer.close()
    stopped = await until(lambda: engine.running == 0, 5)
    assert stopped < 2 and engine.cancelled == 1
