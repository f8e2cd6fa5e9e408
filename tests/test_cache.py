"""The result cache: answers keyed by the content they read, never stale, bounded by bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from lakehoused.errors import QueryError
from lakehoused.query import Answer, QueryEngine, ViewSpec
from lakehoused.query.cache import ENTRY_OVERHEAD, ResultCache
from lakehoused.schema import Column
from tests.helpers import write_object


def view(path: Path, *columns: str) -> ViewSpec:
    return ViewSpec([Column(c, "BIGINT") for c in columns], [path], path.stat().st_size)


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    (tmp_path / "datasets").mkdir()
    return tmp_path


@pytest.fixture
def engine(objects: Path):
    engine = QueryEngine(objects, threads=2, result_cache_bytes=1 << 20)
    yield engine
    engine.close()


def ask(engine: QueryEngine, sql: str, fmt: str = "json") -> tuple[Answer, dict | bytes]:
    answer = engine.answer(sql, fmt, 100)
    if not isinstance(answer, Answer):
        return answer, b"".join(answer)
    return answer, json.loads(answer.body) if fmt == "json" else answer.body


def test_an_answer_is_kept_until_a_dataset_it_reads_changes(objects, engine) -> None:
    w1 = write_object(objects, "w", pa.table({"id": [1, 2]}))
    other = write_object(objects, "other", pa.table({"x": [1]}))
    engine.sync({"w": view(w1, "id"), "other": view(other, "x")}, 1)
    sql = "SELECT sum(id) AS s FROM w"
    first, doc = ask(engine, sql)
    assert (first.cache, doc["rows"], doc["catalog_seq"]) == ("miss", [[3]], 1)
    assert first.etag and first.etag.startswith('W/"')
    again, doc = ask(engine, sql)
    assert (again.cache, again.etag, doc["rows"]) == ("hit", first.etag, [[3]])
    # Another dataset changed: the answer still holds, and says which state it is for.
    other2 = write_object(objects, "other", pa.table({"x": [1, 2]}))
    engine.sync({"w": view(w1, "id"), "other": view(other2, "x")}, 2)
    kept, doc = ask(engine, sql)
    assert (kept.cache, kept.etag, doc["rows"], doc["catalog_seq"]) == ("hit", first.etag, [[3]], 2)
    # w changed: a new answer and a new tag.
    w2 = write_object(objects, "w", pa.table({"id": [1, 2, 3]}))
    engine.sync({"w": view(w2, "id"), "other": view(other2, "x")}, 3)
    fresh, doc = ask(engine, sql)
    assert (fresh.cache, doc["rows"], doc["catalog_seq"]) == ("miss", [[6]], 3)
    assert fresh.etag != first.etag
    # Dropping it back to the first content gives the first tag again: content, not time.
    engine.sync({"w": view(w1, "id"), "other": view(other2, "x")}, 4)
    back, doc = ask(engine, sql)
    assert (back.etag, doc["rows"]) == (first.etag, [[3]])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT random() AS r, count(*) FROM w",
        "SELECT uuid() AS u FROM w",
        "SELECT gen_random_uuid() AS u",
        "SELECT now() AS t, count(*) FROM w",
        "SELECT current_date AS d",
        "SELECT * FROM w USING SAMPLE 1 ROWS",
        "SELECT * FROM w TABLESAMPLE 50%",
        "SELECT count(*) FROM range(10)",
        "SELECT count(*) FROM duckdb_tables",
        "SELECT count(*) FROM duckdb_tables()",
        "SELECT _lakehoused.catalog_seq() AS seq",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM w ORDER BY random()",
        "SELECT current_timestamp AS t",
        "SELECT id, sum(random()) OVER () FROM w",
    ],
)
def test_nondeterministic_statements_are_never_kept(objects, engine, sql) -> None:
    w = write_object(objects, "w", pa.table({"id": [1, 2]}))
    engine.sync({"w": view(w, "id")}, 1)
    for _ in range(2):
        answer = engine.answer(sql, "json", 100)
        assert (answer.cache, answer.etag) == ("bypass", None), sql
    assert len(engine.results) == 0


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*) FROM w",
        "SELECT list_sum([id, 1]) AS s FROM w",  # a built-in macro
        "WITH t AS (SELECT id FROM w) SELECT sum(id) FROM t",
        "SELECT * FROM w JOIN (VALUES (1)) v(id) USING (id)",
        "SELECT id, row_number() OVER (ORDER BY id) FROM w",
        "SELECT 1 AS one",
        # Depends only on settings locked for the engine's life, as the cache is.
        "SELECT current_setting('threads') AS t, count(*) FROM w",
        "SELECT date_trunc('day', TIMESTAMPTZ '2024-01-02 03:04:05+00') AS d, count(*) FROM w",
    ],
)
def test_deterministic_statements_are_kept(objects, engine, sql) -> None:
    w = write_object(objects, "w", pa.table({"id": [1, 2]}))
    engine.sync({"w": view(w, "id")}, 1)
    first = engine.answer(sql, "json", 100)
    second = engine.answer(sql, "json", 100)
    assert (first.cache, second.cache) == ("miss", "hit"), sql
    assert (
        first.etag == second.etag
        and json.loads(first.body)["rows"] == json.loads(second.body)["rows"]
    )


def test_a_cte_shadowing_a_dataset_in_one_scope_still_keys_the_dataset(objects, engine) -> None:
    w1 = write_object(objects, "w", pa.table({"id": [1]}))
    engine.sync({"w": view(w1, "id")}, 1)
    sql = "SELECT (SELECT sum(id) FROM w) AS outer_w, (WITH w AS (SELECT 10 AS id) SELECT sum(id) FROM w) AS cte"
    assert json.loads(engine.answer(sql, "json", 5).body)["rows"] == [[1, 10]]
    w2 = write_object(objects, "w", pa.table({"id": [2]}))
    engine.sync({"w": view(w2, "id")}, 2)
    answer = engine.answer(sql, "json", 5)
    assert answer.cache == "miss" and json.loads(answer.body)["rows"] == [[2, 10]]


def test_a_name_that_is_not_a_dataset_yet_is_not_kept(objects, engine) -> None:
    with pytest.raises(QueryError, match="late"):
        engine.answer("SELECT count(*) FROM late", "json", 5)
    late = write_object(objects, "late", pa.table({"id": [1, 2, 3]}))
    engine.sync({"late": view(late, "id")}, 1)
    first = engine.answer("SELECT count(*) FROM late", "json", 5)
    assert first.cache == "miss" and json.loads(first.body)["rows"] == [[3]]
    assert engine.answer("SELECT count(*) FROM late", "json", 5).cache == "hit"


def test_format_and_max_rows_are_part_of_the_key(objects, engine) -> None:
    w = write_object(objects, "w", pa.table({"id": list(range(10))}))
    engine.sync({"w": view(w, "id")}, 1)
    sql = "SELECT id FROM w ORDER BY id"
    tags = set()
    for fmt in ("json", "ndjson", "csv", "arrow"):
        first, body = ask(engine, sql, fmt)
        second, again = ask(engine, sql, fmt)
        assert (first.cache, second.cache) == ("miss", "hit"), fmt
        assert body == again or fmt == "json"
        tags.add(first.etag)
    three = engine.answer(sql, "json", 3)
    assert json.loads(three.body)["row_count"] == 3
    tags.add(three.etag)
    assert len(tags) == 5


def test_streams_too_large_to_keep_are_answered_not_kept(objects) -> None:
    engine = QueryEngine(objects, threads=2, result_cache_bytes=64 << 10)
    try:
        w = write_object(objects, "w", pa.table({"id": list(range(100_000))}))
        engine.sync({"w": view(w, "id")}, 1)
        sql = "SELECT id FROM w"
        first = engine.answer(sql, "csv", 10)
        assert first.cache == "miss"
        assert len(b"".join(first)) > engine.results.max_entry
        second = engine.answer(sql, "csv", 10)
        assert second.cache == "miss"
        second.close()
        assert len(engine.results) == 0
    finally:
        engine.close()


def test_errors_are_never_kept(objects, engine) -> None:
    for _ in range(2):
        with pytest.raises(QueryError):
            engine.answer("SELECT 1 / 0 AS x, error('no')", "json", 5)
    assert len(engine.results) == 0


def test_the_cache_is_bounded_by_bytes_least_recently_used_first() -> None:
    def key(i: int, statement: str = "") -> tuple:
        return (statement or f"q{i}", "json", 5, ())

    each = 100 + 2 + ENTRY_OVERHEAD  # body, statement text, the rest
    cache = ResultCache(4 * each)
    for i in range(4):
        cache.put(key(i), b"x" * 100)
    assert len(cache) == 4 and cache.used == 4 * each
    assert cache.get(key(0)) is not None  # 0 is now the most recently used
    cache.put(key(4), b"y" * 100)
    assert cache.get(key(1)) is None and cache.get(key(0)) is not None
    assert cache.used <= cache.max_bytes
    cache.put(key(5), b"z" * (cache.max_entry + 1))  # larger than a quarter: not kept
    assert cache.get(key(5)) is None
    # A long statement is paid for: it is held as long as its answer.
    cache.put(key(6, "SELECT " + "1" * cache.max_entry), b"tiny")
    assert cache.get(key(6, "SELECT " + "1" * cache.max_entry)) is None
    cache.resize(0)
    assert len(cache) == 0 and cache.used == 0


def test_a_cache_of_zero_bytes_keeps_nothing_but_still_tags(objects) -> None:
    engine = QueryEngine(objects, threads=2)
    try:
        w = write_object(objects, "w", pa.table({"id": [1]}))
        engine.sync({"w": view(w, "id")}, 1)
        first = engine.answer("SELECT id FROM w", "json", 5)
        second = engine.answer("SELECT id FROM w", "json", 5)
        assert (first.cache, second.cache) == ("bypass", "bypass")
        assert first.etag and first.etag == second.etag
    finally:
        engine.close()
