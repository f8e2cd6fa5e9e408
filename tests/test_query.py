"""The query engine on real DuckDB and real Parquet objects: views, sandbox, limits, encoders."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from lakehoused.errors import ForbiddenQuery, QueryError, QueryTimeout, StoreError
from lakehoused.query import QueryEngine, ViewSpec, check_statement
from lakehoused.schema import Column
from tests.helpers import write_object


def spec(*paths: Path, columns: list[tuple[str, str]]) -> ViewSpec:
    return ViewSpec([Column(n, t) for n, t in columns], list(paths))


def rows(engine: QueryEngine, sql: str) -> list[dict]:
    return engine.execute(sql).reader.read_all().to_pylist()


def streamed(engine: QueryEngine, sql: str, fmt: str) -> bytes:
    return b"".join(engine.answer(sql, fmt, 10))


def chunks(engine: QueryEngine, sql: str, fmt: str) -> list[bytes]:
    return list(engine.answer(sql, fmt, 10))


def digests(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    root = tmp_path / "objects"
    (root / "datasets").mkdir(parents=True)
    return root


@pytest.fixture
def make_engine(objects: Path):
    engines: list[QueryEngine] = []

    def make(**overrides) -> QueryEngine:
        engine = QueryEngine(objects, **{"threads": 2, **overrides})
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def workers(objects: Path, make_engine) -> QueryEngine:
    """An engine with one dataset, `workers`, of two parts; the second added a column."""
    old = write_object(objects, "workers", pa.table({"id": [1, 2], "name": ["ada", "bob"]}))
    new = write_object(objects, "workers", pa.table({"id": [3], "name": ["cy"], "team": ["ops"]}))
    engine = make_engine()
    columns = [("id", "BIGINT"), ("name", "VARCHAR"), ("team", "VARCHAR")]
    engine.sync({"workers": spec(old, new, columns=columns)}, seq=7)
    return engine


# --- views ---------------------------------------------------------------------------


def test_view_reads_parts_and_older_parts_read_new_columns_as_null(workers: QueryEngine) -> None:
    assert rows(workers, "SELECT * FROM workers ORDER BY id") == [
        {"id": 1, "name": "ada", "team": None},
        {"id": 2, "name": "bob", "team": None},
        {"id": 3, "name": "cy", "team": "ops"},
    ]
    result = workers.execute("SELECT id, name FROM workers")
    assert result.columns == [{"name": "id", "type": "BIGINT"}, {"name": "name", "type": "VARCHAR"}]
    assert result.catalog_seq == 7 == workers.catalog_seq
    result.close()


def test_sync_replaces_and_drops_views(objects: Path, workers: QueryEngine) -> None:
    other = write_object(objects, "other", pa.table({"x": [1]}))
    workers.sync({"other": spec(other, columns=[("x", "BIGINT")])}, seq=8)
    assert rows(workers, "SELECT x FROM other") == [{"x": 1}]
    with pytest.raises(QueryError, match="workers"):
        workers.execute("SELECT * FROM workers")
    replaced = write_object(objects, "other", pa.table({"x": [2, 3]}))
    workers.sync({"other": spec(replaced, columns=[("x", "BIGINT")])}, seq=9)
    assert rows(workers, "SELECT sum(x) AS s FROM other") == [{"s": 5}]
    with workers.execute("SELECT 1") as result:
        assert result.catalog_seq == 9


def test_a_failed_sync_changes_nothing(objects: Path, workers: QueryEngine) -> None:
    other = write_object(objects, "other", pa.table({"x": [1]}))
    missing = objects / "datasets" / "other" / ("0" * 64 + ".parquet")
    views = {"other": spec(other, columns=[("x", "BIGINT")])}
    with pytest.raises(StoreError, match="refresh view broken"):
        workers.sync({**views, "broken": spec(missing, columns=[("x", "BIGINT")])}, seq=8)
    assert workers.catalog_seq == 7
    assert rows(workers, "SELECT count(*) AS n FROM workers") == [{"n": 3}]
    with pytest.raises(QueryError, match="other"):
        workers.execute("SELECT * FROM other")
    workers.sync(views, seq=8)
    assert rows(workers, "SELECT x FROM other") == [{"x": 1}]


def test_query_sees_one_catalog_state_while_views_swap(objects: Path, make_engine) -> None:
    """Two views updated together: a join of them never sees one old and one new."""
    engine = make_engine(threads=4)
    versions = []
    for v in range(4):
        lhs = write_object(objects, "lhs", pa.table({"v": [v] * 1000}))
        rhs = write_object(objects, "rhs", pa.table({"v": [v] * 1000}))
        versions.append(
            {name: spec(p, columns=[("v", "BIGINT")]) for name, p in [("lhs", lhs), ("rhs", rhs)]}
        )
    engine.sync(versions[0], seq=0)
    stop = threading.Event()
    seen: list[tuple] = []
    errors: list[BaseException] = []

    def swap() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            engine.sync(versions[i % 4], seq=i)

    def query() -> None:
        try:
            while not stop.is_set():
                result = engine.execute(
                    "SELECT min(lhs.v) AS l1, max(lhs.v) AS l2, min(rhs.v) AS r1, max(rhs.v) AS r2"
                    " FROM lhs, rhs USING SAMPLE 10 ROWS"
                )
                (row,) = result.reader.read_all().to_pylist()
                seen.append((result.catalog_seq, *row.values()))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=swap)] + [threading.Thread(target=query) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(seen) > 10
    for seq, l1, l2, r1, r2 in seen:
        assert l1 == l2 == r1 == r2 == seq % 4  # the seq matches the views it saw


def test_views_can_still_change_after_the_configuration_is_locked(
    objects: Path, make_engine
) -> None:
    engine = make_engine()
    path = write_object(objects, "late", pa.table({"x": [1]}))
    engine.sync({"late": spec(path, columns=[("x", "BIGINT")])}, seq=1)
    assert rows(engine, "SELECT current_setting('lock_configuration') AS locked, x FROM late") == [
        {"locked": True, "x": 1}
    ]


# --- the sandbox -----------------------------------------------------------------------


def attacks(objects: Path) -> list[str]:
    inside = objects / "datasets"
    return [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        f"SELECT * FROM read_text('{inside}/../../../../../../etc/passwd')",
        f"SELECT * FROM read_csv('{inside}/../../../../../../etc/passwd')",
        f"COPY (SELECT 1) TO '{inside}/workers/x.parquet'",
        "COPY (SELECT 1) TO '/tmp/lakehoused-escape.csv'",
        f"COPY workers TO '{sorted((inside / 'workers').iterdir())[0]}'",
        "EXPORT DATABASE '/tmp/lakehoused-export'",
        f"EXPORT DATABASE '{inside}/export'",
        f"ATTACH '{inside}/x.db' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "RESET memory_limit",
        "PRAGMA memory_limit = '10GB'",
        "PRAGMA version",
        "SELECT * FROM enable_logging(storage = 'file', storage_path = '/tmp/lakehoused-log')",
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'x')",
        "SELECT getenv('HOME')",
        "SELECT 1; SELECT 2",
        "SELECT 1; COPY (SELECT 1) TO '/tmp/lakehoused-second.csv'",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{inside}/workers/y.parquet'",
        "CREATE TABLE t AS SELECT 1",
        "CREATE OR REPLACE VIEW workers AS SELECT 1",
        "DROP VIEW workers",
        "UPDATE _lakehoused.catalog SET seq = 99",
        "CALL pragma_version()",
        "SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/lakehoused-query.csv''')",
        "USE system",
        "SELEC 1",
    ]


def test_attack_corpus_is_refused_and_changes_nothing(objects: Path, workers: QueryEngine) -> None:
    before = digests(objects)
    for sql in attacks(objects):
        with pytest.raises(QueryError) as refused:
            result = workers.execute(sql)
            result.reader.read_all()
        assert str(refused.value), sql
        # The engine still answers, with the catalog it had.
        assert rows(workers, "SELECT count(*) AS n FROM workers") == [{"n": 3}], sql
        assert workers.catalog_seq == 7
    assert digests(objects) == before
    # The very names the corpus tries (other work on this machine may use /tmp/lakehoused-*).
    for name in ("escape.csv", "export", "log", "second.csv", "query.csv"):
        assert not Path(f"/tmp/lakehoused-{name}").exists(), name


def test_refusals_name_what_was_found() -> None:
    with pytest.raises(ForbiddenQuery, match="only one SELECT statement per request; got COPY"):
        check_statement("COPY (SELECT 1) TO 'x.csv'")
    with pytest.raises(ForbiddenQuery, match=r"got 2 statements \(SELECT, SELECT\)"):
        check_statement("SELECT 1; SELECT 2")
    with pytest.raises(ForbiddenQuery, match="got EXPLAIN"):
        check_statement("EXPLAIN ANALYZE COPY (SELECT 1) TO 'x'")
    with pytest.raises(QueryError, match="syntax error"):
        check_statement("SELEC 1")
    with pytest.raises(QueryError, match="no SQL"):
        check_statement("  ; ")
    for ok in [
        "SELECT 1",
        "FROM workers",
        "WITH t AS (SELECT 1) SELECT * FROM t",
        "VALUES (1)",
        "SELECT 1;",
    ]:
        check_statement(ok)


def test_reading_outside_the_object_directory_is_forbidden(workers: QueryEngine) -> None:
    with pytest.raises(ForbiddenQuery, match="Permission"):
        workers.execute("SELECT * FROM read_text('/etc/passwd')")


def test_python_variables_are_not_scanned(workers: QueryEngine) -> None:
    secret_frame = pa.table({"password": ["hunter2"]})  # noqa: F841 - the bait
    with pytest.raises(QueryError, match="secret_frame"):
        rows(workers, "SELECT * FROM secret_frame")


def test_long_query_is_interrupted_at_the_time_limit(workers: QueryEngine) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryTimeout, match=r"longer than 1 s; raise server\.query_timeout_s"):
        result = workers.execute(
            "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b", timeout_s=1
        )
        result.reader.read_all()
    assert time.perf_counter() - started < 5
    assert rows(workers, "SELECT count(*) AS n FROM workers") == [{"n": 3}]


def test_streaming_past_the_time_limit_is_interrupted(workers: QueryEngine) -> None:
    result = workers.execute(
        "SELECT a.range FROM range(1000000) a, range(1000000) b", timeout_s=0.5
    )
    with pytest.raises(QueryTimeout):
        for _ in result.reader:
            pass


def test_memory_limit_fails_the_query_not_the_daemon(make_engine, objects: Path) -> None:
    engine = make_engine(memory_limit="100MB")
    for sql in [
        "SELECT string_agg(repeat('x', 1000), ',') FROM range(10000000)",
        "SELECT list(range) FROM range(100000000)",
    ]:
        with pytest.raises(QueryError, match="memory"):
            engine.execute(sql).reader.read_all()
    assert rows(engine, "SELECT 42 AS x") == [{"x": 42}]


def test_a_result_closed_early_releases_its_cursor(workers: QueryEngine) -> None:
    for _ in range(50):
        result = workers.execute("SELECT * FROM range(10000000)")
        result.reader.read_next_batch()
        result.close()
        result.close()
    del result
    assert rows(workers, "SELECT count(*) AS n FROM workers") == [{"n": 3}]


# --- encoders ----------------------------------------------------------------------------

TYPED = """
SELECT * FROM (VALUES
  (1::BIGINT, 1.5::DOUBLE, 'é "q"
line', DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05.25', true, NULL,
   123456789012345678901234567890123456::DECIMAL(38,0), 'nan'::DOUBLE, 'ab'::BLOB, 7::DECIMAL(10,0),
   1.50::DECIMAL(10,2), TIMESTAMPTZ '2024-01-02 03:04:05+00', [DATE '2024-01-01'], 'inf'::DOUBLE),
  (NULL, NULL, NULL, NULL, TIMESTAMP '2024-01-02 03:04:05', NULL, NULL, NULL, NULL, NULL, NULL,
   NULL, NULL, NULL, '-inf'::DOUBLE)
) t(b, d, v, dt, ts, ok, nothing, big, nan, blob, small_dec, money, tz, dates, inf)
"""


def test_json_types(workers: QueryEngine) -> None:
    doc = json.loads(workers.execute_json(TYPED, max_rows=10).body)
    assert doc["row_count"] == 2 and doc["truncated"] is False and doc["catalog_seq"] == 7
    assert doc["elapsed_ms"] >= 0
    assert [c["type"] for c in doc["columns"]][:8] == [
        "BIGINT", "DOUBLE", "VARCHAR", "DATE", "TIMESTAMP", "BOOLEAN", "NULL", "DECIMAL(38,0)",
    ]  # fmt: skip
    assert doc["rows"][0] == [
        1, 1.5, 'é "q"\nline', "2024-02-29", "2024-01-02T03:04:05.25", True, None,
        123456789012345678901234567890123456, "NaN", "YWI=", 7, "1.50", "2024-01-02T03:04:05Z",
        ["2024-01-01"], "Infinity",
    ]  # fmt: skip
    assert doc["rows"][1] == [None, None, None, None, "2024-01-02T03:04:05"] + [None] * 9 + [
        "-Infinity"
    ]


def test_json_truncates_at_max_rows(workers: QueryEngine) -> None:
    doc = json.loads(workers.execute_json("SELECT * FROM range(100000000)", max_rows=3).body)
    assert doc["rows"] == [[0], [1], [2]]
    assert doc["row_count"] == 3 and doc["truncated"] is True
    exact = json.loads(workers.execute_json("SELECT * FROM range(3)", max_rows=3).body)
    assert exact["row_count"] == 3 and exact["truncated"] is False
    empty = json.loads(workers.execute_json("SELECT 1 AS x WHERE false", max_rows=3).body)
    assert empty["rows"] == [] and empty["columns"] == [{"name": "x", "type": "INTEGER"}]


def test_ndjson_round_trip(workers: QueryEngine) -> None:
    sql = "SELECT range AS n, 'r' || range AS s, DATE '2024-01-01' + range::INT AS d FROM range(20000)"
    body = streamed(workers, sql, "ndjson")
    lines = [json.loads(line) for line in body.splitlines()]
    assert len(lines) == 20000
    assert lines[1] == {"n": 1, "s": "r1", "d": "2024-01-02"}
    row = json.loads(streamed(workers, TYPED, "ndjson").splitlines()[0])
    assert row["nan"] == "NaN" and row["big"] == 123456789012345678901234567890123456


def test_csv_round_trip(workers: QueryEngine) -> None:
    sql = "SELECT id, name, team FROM workers ORDER BY id"
    parsed = list(csv.reader(io.StringIO(streamed(workers, sql, "csv").decode())))
    assert parsed == [
        ["id", "name", "team"],
        ["1", "ada", ""],
        ["2", "bob", ""],
        ["3", "cy", "ops"],
    ]
    parts = chunks(workers, "SELECT range AS n FROM range(20000)", "csv")
    assert len(parts) > 1 and parts[1].count(b"\n") > 0 and b'"n"' not in parts[1]
    body = b"".join(parts).decode().splitlines()
    assert body[0] == '"n"' and body[1:] == [str(i) for i in range(20000)]
    empty = streamed(workers, "SELECT 1 AS x WHERE false", "csv")
    assert empty.decode().strip() == '"x"'
    typed = list(csv.reader(io.StringIO(streamed(workers, TYPED, "csv").decode())))
    assert typed[1][2] == 'é "q"\nline' and typed[1][13] == '["2024-01-01"]'


def test_arrow_round_trip(workers: QueryEngine) -> None:
    sql = "SELECT range AS n, range::VARCHAR AS s, TIMESTAMP '2024-01-01' AS t FROM range(20000)"
    parts = chunks(workers, sql, "arrow")
    assert len(parts) > 2
    table = pa.ipc.open_stream(b"".join(parts)).read_all()
    assert table.num_rows == 20000
    assert table.column("n").to_pylist() == list(range(20000))
    assert table.column("t")[0].as_py() == dt.datetime(2024, 1, 1)
    empty = pa.ipc.open_stream(streamed(workers, "SELECT 1 AS x WHERE false", "arrow"))
    assert empty.read_all().num_rows == 0 and empty.schema.names == ["x"]


def test_json_edge_shapes(workers: QueryEngine) -> None:
    doc = json.loads(workers.execute_json("SELECT 1 AS a, 2 AS a; ", 5).body)
    assert doc["columns"] == [{"name": "a", "type": "INTEGER"}] * 2 and doc["rows"] == [[1, 2]]
    sql = "SELECT range AS n FROM range(25000) -- a trailing comment"
    doc = json.loads(workers.execute_json(sql, 20000).body)
    assert doc["rows"][-1] == [19999] and doc["truncated"] is True
    sql = "SELECT [1, 2] AS l, {'k': 'v'} AS st, '12:00'::TIME AS t, INTERVAL 1 DAY AS i"
    assert json.loads(workers.execute_json(sql, 5).body)["rows"] == [
        [[1, 2], {"k": "v"}, "12:00:00", "1 day"]
    ]
    doc = json.loads(workers.execute_json("SELECT * FROM workers ORDER BY 1", 2).body)
    assert doc["row_count"] == 2 and doc["truncated"] is True


def test_memory_cache_holds_small_datasets_and_swaps_them(objects: Path, make_engine) -> None:
    first = write_object(objects, "w", pa.table({"id": [1, 2, 3]}))
    big = write_object(objects, "big", pa.table({"id": list(range(100_000))}))
    engine = make_engine(cache_bytes=first.stat().st_size * 8 + 1)
    engine.sync(
        {
            "w": ViewSpec([Column("id", "BIGINT")], [first], first.stat().st_size),
            "big": ViewSpec([Column("id", "BIGINT")], [big], big.stat().st_size),
        },
        1,
    )

    def tables() -> list[str]:
        return sorted(
            r["table_name"] for r in rows(engine, "SELECT table_name FROM duckdb_tables()")
        )

    assert tables() == ["w"]  # the big one is a view over its object
    assert rows(engine, "SELECT sum(id) AS s FROM w") == [{"s": 6}]
    assert rows(engine, "SELECT count(*) AS n FROM big") == [{"n": 100_000}]
    running = engine.execute("SELECT * FROM w")  # holds the old snapshot
    second = write_object(objects, "w", pa.table({"id": [10]}))
    engine.sync({"w": ViewSpec([Column("id", "BIGINT")], [second], second.stat().st_size)}, 2)
    assert rows(engine, "SELECT sum(id) AS s FROM w") == [{"s": 10}]
    assert tables() == ["w"]  # the old copy went with the swap, and no loaded copy is left
    assert running.reader.read_all().column("id").to_pylist() == [1, 2, 3]
    # Grown past the budget: a view over its object again, in one swap.
    grown = write_object(objects, "w", pa.table({"id": list(range(100_000))}))
    engine.sync({"w": ViewSpec([Column("id", "BIGINT")], [grown], grown.stat().st_size)}, 3)
    assert tables() == [] and rows(engine, "SELECT count(*) AS n FROM w") == [{"n": 100_000}]
    engine.sync({"w": ViewSpec([Column("id", "BIGINT")], [second], second.stat().st_size)}, 4)
    assert tables() == ["w"] and rows(engine, "SELECT sum(id) AS s FROM w") == [{"s": 10}]
    assert json.loads(engine.execute_json("SELECT * FROM w", 5).body)["catalog_seq"] == 4


def test_repeated_json_queries_follow_the_catalog(objects: Path, make_engine) -> None:
    engine = make_engine()
    first = write_object(objects, "w", pa.table({"id": [1, 2]}))
    engine.sync({"w": spec(first, columns=[("id", "BIGINT")])}, 1)
    for _ in range(3):  # the first binds; the others answer in one statement
        doc = json.loads(engine.execute_json("SELECT sum(id) AS s FROM w", 5).body)
        assert (doc["rows"], doc["catalog_seq"]) == ([[3]], 1)
    second = write_object(objects, "w", pa.table({"id": [5], "extra": ["x"]}))
    engine.sync({"w": spec(first, second, columns=[("id", "BIGINT"), ("extra", "VARCHAR")])}, 2)
    doc = json.loads(engine.execute_json("SELECT sum(id) AS s FROM w", 5).body)
    assert (doc["rows"], doc["catalog_seq"]) == ([[8]], 2)
    for _ in range(2):
        doc = json.loads(engine.execute_json("SELECT * FROM w WHERE id > 100", 5).body)
        assert (doc["rows"], doc["catalog_seq"]) == ([], 2)  # no row to carry the seq
        doc = json.loads(engine.execute_json("SELECT * FROM w ORDER BY id", 5).body)
        assert doc["rows"] == [[1, None], [2, None], [5, "x"]]


def test_time_limits_outlive_an_engine_closed_under_a_running_query(
    objects: Path, make_engine
) -> None:
    """One thread keeps every deadline: a deadline firing on a closed engine must not end it."""
    closed = QueryEngine(objects, threads=1)
    stream = closed.execute("SELECT * FROM range(10000000)", timeout_s=0.2)
    stream.reader.read_next_batch()
    closed.close()
    time.sleep(0.4)  # its deadline fires on a closed connection
    engine = make_engine()
    with pytest.raises(QueryTimeout):
        engine.execute(
            "SELECT sum(a.range * b.range) FROM range(1000000) a, range(1000000) b", timeout_s=0.5
        ).reader.read_all()
    del stream
