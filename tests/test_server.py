"""The HTTP API on a real aiohttp server on loopback, over the real daemon (DESIGN §6)."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
from pathlib import Path

import aiohttp
import duckdb
import pyarrow as pa
import pytest

from lakehoused.config import load_config
from lakehoused.daemon import build_app
from lakehoused.server import BACKEND, install_event_loop


@pytest.fixture
async def api(aiohttp_client, make_config, tmp_path):
    """A client of the real daemon's app; `api.drop(relpath, text)` waits for its ingest."""
    config = load_config(make_config(server='query_timeout_s = 2\nmemory_limit = "200MB"'))
    client = await aiohttp_client(build_app(config))

    async def drop(relpath: str, text: str) -> dict:
        before = (await (await client.get("/health")).json())["catalog_seq"]
        path = config.inbox.path / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = tmp_path / "staging.tmp"
        staging.write_text(text, encoding="utf-8")
        staging.rename(path)  # mv: complete at once
        for _ in range(200):
            health = await (await client.get("/health")).json()
            if health["catalog_seq"] > before:
                return health
            await asyncio.sleep(0.05)
        raise AssertionError(f"{relpath} was not ingested")

    client.drop = drop
    client.config = config
    return client


async def sql(client, query: str, **body) -> tuple[int, dict]:
    response = await client.post("/sql", json={"sql": query, **body})
    return response.status, await response.json()


def object_digests(config) -> dict[str, str]:
    root = config.store.path
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.parquet")}


async def test_post_json_text_and_get(api):
    await api.drop("w.csv", "id,name\n1,Zoë\n2,\n")
    status, body = await sql(api, "SELECT * FROM w ORDER BY id")
    assert status == 200
    assert body["columns"] == [
        {"name": "id", "type": "BIGINT"},
        {"name": "name", "type": "VARCHAR"},
    ]
    assert body["rows"] == [[1, "Zoë"], [2, None]]
    assert (body["row_count"], body["truncated"], body["catalog_seq"]) == (2, False, 1)
    assert body["elapsed_ms"] >= 0
    text = await api.post(
        "/sql", data="SELECT count(*) FROM w", headers={"Content-Type": "text/plain"}
    )
    assert (await text.json())["rows"] == [[2]]
    got = await api.get("/sql", params={"q": "SELECT max(id) FROM w"})
    assert (await got.json())["rows"] == [[2]]
    assert got.headers["X-Catalog-Seq"] == "1"


async def test_formats_by_parameter_and_accept(api):
    await api.drop("w.csv", 'id,note\n1,"a, ""b"""\n2,x\n')
    query = "SELECT * FROM w ORDER BY id"
    r = await api.post("/sql", json={"sql": query, "format": "csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(await r.text()))) == [
        ["id", "note"],
        ["1", 'a, "b"'],
        ["2", "x"],
    ]
    r = await api.post("/sql", json={"sql": query}, headers={"Accept": "application/x-ndjson"})
    assert [json.loads(line) for line in (await r.text()).splitlines()] == [
        {"id": 1, "note": 'a, "b"'},
        {"id": 2, "note": "x"},
    ]
    r = await api.get(
        "/sql", params={"q": query}, headers={"Accept": "application/vnd.apache.arrow.stream"}
    )
    table = pa.ipc.open_stream(await r.read()).read_all()
    assert table.to_pydict() == {"id": [1, 2], "note": ['a, "b"', "x"]}
    assert r.headers["X-Catalog-Seq"] == "1"
    status, body = await sql(api, query, format="xml")
    assert status == 400 and "format" in body["error"]["message"]


async def test_streaming_formats_stream(api):
    r = await api.post(
        "/sql", json={"sql": "SELECT range AS n FROM range(3000000)", "format": "csv"}
    )
    assert r.status == 200
    assert "Content-Length" not in r.headers
    assert r.headers.get("Transfer-Encoding") == "chunked"
    first = await r.content.readany()
    assert first.startswith(b'"n"\n0\n1\n')
    total = len(first) + len(await r.read())
    assert total > 20_000_000


async def test_max_rows_truncates(api):
    status, body = await sql(api, "SELECT * FROM range(20)", max_rows=5)
    assert (status, body["row_count"], body["truncated"]) == (200, 5, True)
    status, body = await sql(api, "SELECT * FROM range(20000)", max_rows=10**9)
    assert (body["row_count"], body["truncated"]) == (10000, True)  # server.max_rows caps it


async def test_errors_are_json_with_fitting_statuses(api):
    assert (await sql(api, "SELEC 1"))[0] == 400
    status, body = await sql(api, "COPY (SELECT 1) TO '/tmp/x.csv'")
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await sql(
        api, "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b"
    )
    assert status == 408 and "query_timeout_s" in body["error"]["message"]
    r = await api.get("/nope")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await api.get("/datasets/nope")
    assert r.status == 404 and "nope" in (await r.json())["error"]["message"]
    r = await api.post("/sql", data=b"x" * (2 << 20), headers={"Content-Type": "text/plain"})
    assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
    r = await api.post("/sql", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400
    r = await api.post("/sql", json={"query": "SELECT 1"})
    assert r.status == 400


async def test_datasets_etag_and_dataset_versions(api):
    await api.drop("w.csv", "id\n1\n")
    await api.drop("w.csv", "id\n1\n2\n")
    r = await api.get("/datasets")
    body = await r.json()
    assert r.headers["ETag"] == '"2"' and body["catalog_seq"] == 2
    (w,) = body["datasets"]
    assert (w["name"], w["version"], w["rows"], w["parts"]) == ("w", 2, 2, 1)
    assert (await api.get("/datasets", headers={"If-None-Match": '"2"'})).status == 304
    r = await api.get("/datasets/w")
    one = await r.json()
    assert [v["version"] for v in one["versions"]] == [1, 2]
    assert one["schema"] == [{"name": "id", "type": "BIGINT", "nullable": False}]


async def test_events_paging_and_status(api):
    await api.drop("a.csv", "x\n1\n")
    await api.drop("bad.csv", "x,y\n1\n")
    body = await (await api.get("/events", params={"after": 0, "limit": 1})).json()
    assert [e["type"] for e in body["events"]] == ["dataset.registered"]
    body = await (await api.get("/events", params={"after": body["next_after"]})).json()
    (rejected,) = body["events"]
    assert rejected["type"] == "ingest.rejected" and rejected["seq"] == 2
    status = await (await api.get("/status")).json()
    assert status["files_pending"] == 0 and status["in_flight"] == []
    assert status["last_ingested"]["file"] == "a.csv"
    assert status["last_error"]["file"] == "bad.csv"
    assert "expected 2 fields" in status["last_error"]["reason"]
    error_file = api.config.inbox.path / ".rejected" / "bad.csv.error.json"
    assert json.loads(error_file.read_text())["details"] == {"line": 2}
    assert (api.config.inbox.path / ".done" / "a.csv").exists()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "100000000000000000000"}, "after"),
        ({"after": "abc"}, "after"),
        ({"after": "-1"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"before": "1.5"}, "before"),
        ({"order": "sideways"}, "order"),
    ],
)
async def test_bad_events_parameters_are_a_400_naming_them(api, params, field):
    response = await api.get("/events", params=params)
    body = await response.json()
    assert response.status == 400 and body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith(f"{field}:")


async def test_min_seq_waits_for_the_catalog(api):
    # A first ingest warms a converter up, so that the next fits the 2 s wait on a busy box.
    await api.drop("warm.csv", "x\n1\n")
    task = asyncio.ensure_future(sql(api, "SELECT count(*) FROM late", min_seq=2))
    await asyncio.sleep(0.1)
    assert not task.done()
    await api.drop("late.csv", "x\n1\n2\n")
    status, body = await task
    assert status == 200, body
    assert (body["rows"], body["catalog_seq"]) == ([[2]], 2)
    status, body = await sql(api, "SELECT 1", min_seq=99)
    assert status == 503 and "seq 99" in body["error"]["message"]


async def test_attack_corpus_over_http_leaves_the_store_alone(api):
    await api.drop("w.csv", "id\n1\n")
    inside = api.config.store.path / "datasets"
    before = object_digests(api.config)
    attacks = [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        f"COPY w TO '{inside}/w/x.parquet'",
        "COPY w TO '/tmp/lakehoused-http.csv'",
        "EXPORT DATABASE '/tmp/lakehoused-http'",
        f"ATTACH '{inside}/x.db' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "RESET memory_limit",
        "PRAGMA database_list",
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'x')",
        "SELECT getenv('HOME')",
        "SELECT 1; SELECT 2",
        f"EXPLAIN ANALYZE COPY w TO '{inside}/w/y.parquet'",
        "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b",
        "SELECT string_agg(repeat('x', 1000), ',') FROM range(10000000)",
    ]
    for attack in attacks:
        status, body = await sql(api, attack)
        assert status in (400, 403, 408), (attack, body)
        assert "error" in body
        assert (await sql(api, "SELECT count(*) FROM w"))[1]["rows"] == [[1]], attack
    assert object_digests(api.config) == before
    assert not list(Path("/tmp").glob("lakehoused-http*"))


async def test_token_guards_everything_but_health(aiohttp_client, make_config, monkeypatch):
    monkeypatch.setenv("LAKEHOUSED_TEST_TOKEN", "s3cret-value")
    config = load_config(make_config(server='token_env = "LAKEHOUSED_TEST_TOKEN"'))
    client = await aiohttp_client(build_app(config))
    assert (await client.get("/health")).status == 200
    denied = await client.get("/datasets")
    assert denied.status == 401
    assert "s3cret" not in await denied.text()
    ok = await client.get("/datasets", headers={"Authorization": "Bearer s3cret-value"})
    assert ok.status == 200
    # /health is open to a probe, but what a problem is about (paths, errors) needs the token.
    client.app[BACKEND].health.degraded("store", "put into /srv/private/objects: no space")
    anyone = await (await client.get("/health")).json()
    assert anyone["status"] == "degraded" and anyone["problems"][0]["part"] == "store"
    assert "reason" not in anyone["problems"][0]
    auth = {"Authorization": "Bearer s3cret-value"}
    trusted = await (await client.get("/health", headers=auth)).json()
    assert "no space" in trusted["problems"][0]["reason"]


# --- the result cache over HTTP: ETag, 304, X-Cache ----------------------------------------


async def test_answers_carry_a_content_etag_and_revalidate_with_304(api):
    await api.drop("w.csv", "id\n1\n2\n")
    query = {"q": "SELECT sum(id) AS s FROM w"}
    first = await api.get("/sql", params=query)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and first.headers["X-Cache"] == "miss"
    assert first.headers["Cache-Control"] == "no-cache" and "Accept" in first.headers["Vary"]
    second = await api.get("/sql", params=query)
    assert (second.headers["X-Cache"], second.headers["ETag"]) == ("hit", etag)
    assert (await second.json())["rows"] == [[3]]
    strong = etag.removeprefix("W/")
    for tags in (etag, strong, f'"nope", {etag}', f'W/"x",{strong}', "*"):
        r = await api.get("/sql", params=query, headers={"If-None-Match": tags})
        assert r.status == 304, tags
        assert r.headers["ETag"] == etag and r.headers["X-Catalog-Seq"] == "1"
        assert await r.read() == b""
    r = await api.post(
        "/sql", json={"sql": query["q"]}, headers={"If-None-Match": etag}
    )  # a query is a read, whichever the method
    assert r.status == 304
    r = await api.get("/sql", params=query, headers={"If-None-Match": '"other"'})
    assert r.status == 200 and r.headers["ETag"] == etag
    # Another format is another representation, with its own tag.
    csv_answer = await api.get("/sql", params={**query, "format": "csv"})
    assert csv_answer.headers["ETag"] not in (etag, None)
    # New data: the old tag no longer matches, and the answer is new.
    await api.drop("w.csv", "id\n1\n2\n3\n")
    r = await api.get("/sql", params=query, headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag
    assert (await r.json())["rows"] == [[6]] and r.headers["X-Cache"] == "miss"


async def test_an_answer_kept_across_another_datasets_change_names_the_new_seq(api):
    await api.drop("w.csv", "id\n1\n")
    query = {"q": "SELECT count(*) AS n FROM w"}
    etag = (await api.get("/sql", params=query)).headers["ETag"]
    await api.drop("other.csv", "x\n1\n")
    r = await api.get("/sql", params=query)
    assert (r.headers["X-Cache"], r.headers["ETag"], r.headers["X-Catalog-Seq"]) == (
        "hit",
        etag,
        "2",
    )
    assert (await r.json())["catalog_seq"] == 2
    r = await api.get("/sql", params=query, headers={"If-None-Match": etag})
    assert (r.status, r.headers["X-Catalog-Seq"]) == (304, "2")


async def test_nondeterministic_answers_are_never_cached_nor_tagged(api):
    for _ in range(2):
        r = await api.get(
            "/sql", params={"q": "SELECT random() AS r"}, headers={"If-None-Match": "*"}
        )
        assert r.status == 200 and "ETag" not in r.headers
        assert (r.headers["X-Cache"], r.headers["Cache-Control"]) == ("bypass", "no-store")


async def test_streamed_answers_are_cached_when_they_fit(api):
    await api.drop("w.csv", "id\n1\n2\n")
    query = {"q": "SELECT id FROM w ORDER BY id", "format": "ndjson"}
    first = await api.get("/sql", params=query)
    body = await first.read()
    assert first.headers["X-Cache"] == "miss" and "Transfer-Encoding" in first.headers
    second = await api.get("/sql", params=query)
    assert second.headers["X-Cache"] == "hit" and await second.read() == body
    assert second.headers["Content-Type"].startswith("application/x-ndjson")


# --- bad input: a 400 naming the field, always JSON -----------------------------------------

BAD_BODIES = [
    (b'{"sql": "SELECT 1", "max_rows": 1e400}', "max_rows", "1e400"),
    (b'{"sql": "SELECT 1", "max_rows": Infinity}', "max_rows", "Infinity"),
    (b'{"sql": "SELECT 1", "max_rows": 2.7}', "max_rows", "2.7"),
    (b'{"sql": "SELECT 1", "max_rows": true}', "max_rows", "true"),
    (b'{"sql": "SELECT 1", "max_rows": 0}', "max_rows", "0"),
    (b'{"sql": "SELECT 1", "max_rows": "5"}', "max_rows", '"5"'),
    (b'{"sql": "SELECT 1", "min_seq": 1e400}', "min_seq", "1e400"),
    (b'{"sql": "SELECT 1", "min_seq": -Infinity}', "min_seq", "-Infinity"),
    (b'{"sql": "SELECT 1", "min_seq": NaN}', "min_seq", "NaN"),
    (b'{"sql": "SELECT 1", "min_seq": 2.7}', "min_seq", "2.7"),
    (b'{"sql": "SELECT 1", "min_seq": true}', "min_seq", "true"),
    (b'{"sql": "SELECT 1", "min_seq": -1}', "min_seq", "-1"),
    (b'{"sql": "SELECT 1", "min_seq": 99999999999999999999}', "min_seq", "99999999999999999999"),
    (b'{"sql": "SELECT 1", "limit": 5}', "limit", "limit"),
    (b'{"sql": "SELECT 1", "format": null}', "format", "null"),
    (b'{"sql": "SELECT 1", "format": 3}', "format", "3"),
    (b'{"sql": "SELECT 1", "format": "xml"}', "format", "xml"),
    (b'{"sql": null}', "sql", "null"),
    (b'{"query": "SELECT 1"}', "query", "query"),
    (b"[1, 2]", "body", "JSON object"),
    (b"{not json", "body", "not valid JSON"),
    (b'{"sql": "SELECT \'\xff\'"}', "body", "UTF-8"),
    (b'{"sql": "SELECT \'\\ud800\'"}', "sql", "surrogate"),
]


async def test_bad_json_bodies_are_400_naming_the_field(api):
    # One daemon for every case: each would cost a daemon start of its own.
    for body, field, shown in BAD_BODIES:
        r = await api.post("/sql", data=body, headers={"Content-Type": "application/json"})
        assert r.status == 400 and r.headers["Content-Type"].startswith("application/json"), body
        error = (await r.json())["error"]
        assert error["code"] == "bad_request", body
        assert error["message"].startswith(field) or repr(field) in error["message"], error
        assert shown in error["message"], error


BAD_PARAMS = [
    ({"q": "SELECT 1", "max_rows": "2.7"}, "max_rows"),
    ({"q": "SELECT 1", "max_rows": "1e400"}, "max_rows"),
    ({"q": "SELECT 1", "max_rows": "Infinity"}, "max_rows"),
    ({"q": "SELECT 1", "max_rows": "true"}, "max_rows"),
    ({"q": "SELECT 1", "min_seq": "-1"}, "min_seq"),
    ({"q": "SELECT 1", "min_seq": "\u0661"}, "min_seq"),  # a digit, but not an ASCII one
    ({"q": "SELECT 1", "limit": "3"}, "limit"),
    ({"max_rows": "3"}, "q"),
]


async def test_bad_query_strings_are_400_naming_the_parameter(api):
    for params, field in BAD_PARAMS:
        r = await api.get("/sql", params=params)
        error = (await r.json())["error"]
        assert (r.status, error["code"]) == (400, "bad_request"), params
        assert field in error["message"], error


async def test_a_text_body_that_is_not_utf8_is_a_400(api):
    r = await api.post("/sql", data=b"SELECT '\xff\xfe'", headers={"Content-Type": "text/plain"})
    error = (await r.json())["error"]
    assert (r.status, error["code"]) == (400, "bad_request")
    assert "UTF-8" in error["message"] and "byte 8" in error["message"]
    r = await api.post(
        "/sql", data=b"SELECT 1", params={"max_rows": "x"}, headers={"Content-Type": "text/plain"}
    )
    assert r.status == 400 and "max_rows" in (await r.json())["error"]["message"]


async def test_an_unexpected_error_is_a_json_500_whose_id_is_in_the_log(api, monkeypatch, caplog):
    engine = api.server.app[BACKEND].engine

    def broken(*args, **kwargs):
        raise RuntimeError("a bug, not the request's fault")

    monkeypatch.setattr(engine, "probe", broken)
    with caplog.at_level(logging.ERROR, logger="lakehoused.server"):
        r = await api.post("/sql", json={"sql": "SELECT 1"})
    error = (await r.json())["error"]
    assert (r.status, error["code"]) == (500, "internal")
    assert error["id"] in error["message"] and len(error["id"]) == 12
    assert f"internal error {error['id']}" in caplog.text
    assert "a bug, not the request's fault" in caplog.text  # the log has the traceback
    assert "a bug" not in error["message"]  # the client does not


async def test_a_driver_error_reaching_the_server_is_json(api, monkeypatch):
    engine = api.server.app[BACKEND].engine

    def failing(*args, **kwargs):
        raise duckdb.IOException("IO Error: could not read object")

    monkeypatch.setattr(engine, "probe", failing)
    r = await api.post("/sql", json={"sql": "SELECT 1"})
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.status == 400 and "could not read object" in (await r.json())["error"]["message"]


async def test_a_stream_cut_by_the_time_limit_never_looks_complete(api):
    """Past its first chunk a stream's status is sent: a failure cuts the connection, so the
    client sees an unfinished body, never a short answer that looks whole."""
    endless = "SELECT a.range AS n FROM range(1000000) a, range(1000000) b"
    r = await api.post("/sql", json={"sql": endless, "format": "csv"})
    assert r.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        while await r.content.readany():
            pass
    status, body = await sql(api, "SELECT 42 AS x")
    assert (status, body["rows"]) == (200, [[42]])


def test_lakehoused_run_serves_on_uvloop():
    uvloop = pytest.importorskip("uvloop")
    before = asyncio.get_event_loop_policy()
    try:
        install_event_loop()
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(before)
