"""The one value encoder: every DuckDB type, alone and nested, in json, ndjson and csv.

Each case is parsed strictly (a bare NaN or Infinity fails the parse) in both JSON formats;
the two must agree with each other and with the documented form (README "HTTP API").
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from lakehoused.query import QueryEngine
from lakehoused.query import engine as engine_module

BIG = 123456789012345678901234567890123456
# (case, SQL for the value, its JSON form)
CASES = [
    ("boolean", "true", True),
    ("tinyint", "(-128)::TINYINT", -128),
    ("smallint", "32767::SMALLINT", 32767),
    ("integer", "(-2147483648)::INTEGER", -2147483648),
    ("bigint", "9223372036854775807::BIGINT", 9223372036854775807),
    ("utinyint", "255::UTINYINT", 255),
    ("usmallint", "65535::USMALLINT", 65535),
    ("uinteger", "4294967295::UINTEGER", 4294967295),
    ("ubigint", "18446744073709551615::UBIGINT", 18446744073709551615),
    ("hugeint", "(-170141183460469231731687303715884105728)::HUGEINT", -(2**127)),
    ("uhugeint", "340282366920938463463374607431768211455::UHUGEINT", 2**128 - 1),
    ("varint", "'-123456789012345678901234567890123456789012'::VARINT", -123456789012345678901234567890123456789012),
    ("decimal(4,1)", "1.5::DECIMAL(4,1)", "1.5"),
    ("decimal(9,2)", "(-1234567.89)::DECIMAL(9,2)", "-1234567.89"),
    ("decimal(18,3)", "123456789012345.678::DECIMAL(18,3)", "123456789012345.678"),
    ("decimal(38,10)", "(-1.5)::DECIMAL(38,10)", "-1.5000000000"),
    ("decimal(9,0)", "7::DECIMAL(9,0)", 7),
    ("decimal(38,0)", f"{BIG}::DECIMAL(38,0)", BIG),
    ("float", "1.1::FLOAT", 1.1),
    ("float nan", "'nan'::FLOAT", "NaN"),
    ("float -inf", "'-inf'::FLOAT", "-Infinity"),
    ("double", "0.1::DOUBLE", 0.1),
    ("double big", "1e300::DOUBLE", 1e300),
    ("double nan", "'nan'::DOUBLE", "NaN"),
    ("double inf", "'inf'::DOUBLE", "Infinity"),
    ("double -inf", "'-inf'::DOUBLE", "-Infinity"),
    ("varchar", "'é \"q\"' || chr(10) || 'line' || chr(9) || '\\'", 'é "q"\nline\t\\'),
    ("varchar control", "chr(1) || chr(31)", "\x01\x1f"),
    ("json", "'{\"a\": [1, 2]}'::JSON", {"a": [1, 2]}),
    ("enum", "'b'::ENUM('a', 'b')", "b"),
    ("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("blob", "'\\x00\\xFFab'::BLOB", "AP9hYg=="),
    ("bit", "'0101'::BIT", "0101"),
    ("date", "DATE '2024-02-29'", "2024-02-29"),
    ("date infinity", "'infinity'::DATE", "infinity"),
    ("date -infinity", "'-infinity'::DATE", "-infinity"),
    ("date bc", "'0044-03-15 (BC)'::DATE", "0044-03-15 (BC)"),
    ("time", "TIME '12:34:56.789'", "12:34:56.789"),
    ("time_ns", "'12:34:56.123456789'::TIME_NS", "12:34:56.123456789"),
    ("timetz", "'12:34:56.5+02:30'::TIMETZ", "12:34:56.5+02:30"),
    ("timestamp", "TIMESTAMP '2024-01-02 03:04:05.25'", "2024-01-02T03:04:05.25"),
    ("timestamp whole", "TIMESTAMP '2024-01-02 03:04:05'", "2024-01-02T03:04:05"),
    ("timestamp_s", "'2024-01-02 03:04:05'::TIMESTAMP_S", "2024-01-02T03:04:05"),
    ("timestamp_ms", "'2024-01-02 03:04:05.123'::TIMESTAMP_MS", "2024-01-02T03:04:05.123"),
    ("timestamp_ns", "'2024-01-02 03:04:05.123456789'::TIMESTAMP_NS", "2024-01-02T03:04:05.123456789"),
    ("timestamp infinity", "'infinity'::TIMESTAMP", "infinity"),
    ("timestamp bc", "'0044-03-15 (BC) 01:02:03'::TIMESTAMP", "0044-03-15 (BC) 01:02:03"),
    ("timestamptz", "TIMESTAMPTZ '2024-01-02 03:04:05.5+02'", "2024-01-02T01:04:05.5Z"),
    ("timestamptz_ns", "'2024-01-02 03:04:05.123456789+00'::TIMESTAMPTZ_NS", "2024-01-02T03:04:05.123456789Z"),
    ("timestamptz -infinity", "'-infinity'::TIMESTAMPTZ", "-infinity"),
    ("interval", "INTERVAL '1 year 2 months 3 days 04:05:06.5'", "1 year 2 months 3 days 04:05:06.5"),
    ("interval negative", "INTERVAL '-1 year -3 days 04:05:06.5'", "-1 year -3 days 04:05:06.5"),
    ("geometry", "'POINT(1 2)'::GEOMETRY", "POINT (1 2)"),
    ("variant", "'x'::VARIANT", "x"),
    ("null", "NULL", None),
    ("list", "[1, 2, NULL]", [1, 2, None]),
    ("list empty", "[]::INTEGER[]", []),
    ("list null", "NULL::INTEGER[]", None),
    ("list of doubles", "['nan'::DOUBLE, 'inf'::DOUBLE, '-inf'::DOUBLE, 1.5, NULL]", ["NaN", "Infinity", "-Infinity", 1.5, None]),
    ("list of lists", "[['nan'::DOUBLE], []]", [["NaN"], []]),
    ("list of intervals", "[INTERVAL 1 DAY, NULL]", ["1 day", None]),
    ("list of timestamps", "['2024-01-02 03:04:05.123456789'::TIMESTAMP_NS]", ["2024-01-02T03:04:05.123456789"]),
    ("list of blobs", "['a'::BLOB]", ["YQ=="]),
    ("list of decimals", "[1.50::DECIMAL(10,2)]", ["1.50"]),
    ("list of time", "[TIME '01:02:03']", ["01:02:03"]),
    ("array", "[1.5::DOUBLE, 'inf'::DOUBLE]::DOUBLE[2]", [1.5, "Infinity"]),
    ("array of ints", "[1, 2]::INTEGER[2]", [1, 2]),
    ("struct", "{'n': 'nan'::DOUBLE, 'x': 1, 's': 'a'}", {"n": "NaN", "x": 1, "s": "a"}),
    ("struct plain", "{'x': 1, 'd': DATE '2024-01-01'}", {"x": 1, "d": "2024-01-01"}),
    ("struct of decimal", "{'d': 1.50::DECIMAL(10,2)}", {"d": "1.50"}),
    ("struct of timestamptz", "{'t': TIMESTAMPTZ '2024-01-02 03:04:05+00'}", {"t": "2024-01-02T03:04:05Z"}),
    ("struct null", "NULL::STRUCT(a DOUBLE)", None),
    ("struct of null", "{'a': NULL::DOUBLE}", {"a": None}),
    ("struct odd names", "{'we''ird \"n\"': 'nan'::DOUBLE}", {"we'ird \"n\"": "NaN"}),
    ("map", "MAP {'a': 1, 'b': 2}", {"a": 1, "b": 2}),
    ("map of doubles", "MAP {'a': 'nan'::DOUBLE, 'b': 2.5}", {"a": "NaN", "b": 2.5}),
    ("map int keys", "MAP {1: 'x'}", {"1": "x"}),
    ("map of intervals", "MAP {'k': INTERVAL 2 HOURS}", {"k": "02:00:00"}),
    ("map null", "NULL::MAP(VARCHAR, DOUBLE)", None),
    ("union", "union_value(num := 2)::UNION(num INTEGER, s VARCHAR)", {"num": 2}),
    ("union of double", "union_value(d := 'nan'::DOUBLE)::UNION(d DOUBLE, s VARCHAR)", {"d": "NaN"}),
    ("union null", "NULL::UNION(a INTEGER, b VARCHAR)", None),
    ("tuple", "row(1, 'x')", [1, "x"]),
    ("tuple with nan", "row('nan'::DOUBLE, 1)", ["NaN", 1]),
    ("deep", "{'a': [{'b': MAP {'k': ['nan'::DOUBLE, 2.0]}}]}", {"a": [{"b": {"k": ["NaN", 2.0]}}]}),
    ("deep timestamps", "[{'t': [TIMESTAMP '2024-01-02 03:04:05']}]", [{"t": ["2024-01-02T03:04:05"]}]),
]  # fmt: skip
NESTED = ("list", "array", "struct", "map", "union", "tuple", "deep", "json")


def strict(text: str | bytes) -> object:
    """json.loads that refuses NaN and Infinity, as a strict client would."""

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> QueryEngine:
    root = tmp_path_factory.mktemp("objects")
    (root / "datasets").mkdir()
    engine = QueryEngine(Path(root), threads=2)
    yield engine
    engine.close()


@pytest.mark.parametrize(("case", "sql", "expected"), CASES, ids=[c[0] for c in CASES])
def test_json_and_ndjson_agree_on_every_type(engine, case, sql, expected) -> None:
    # A second row holds NULL: the same type, the other branch of every encoder.
    query = f"SELECT v, o FROM (SELECT 1 AS o, {sql} AS v UNION ALL SELECT 2, NULL) ORDER BY o"
    doc = strict(engine.answer(query, "json", 10).body)
    lines = [strict(line) for line in b"".join(engine.answer(query, "ndjson", 10)).splitlines()]
    assert doc["rows"] == [[expected, 1], [None, 2]]
    assert lines == [{"v": expected, "o": 1}, {"v": None, "o": 2}]
    assert doc["columns"][0]["name"] == "v" and doc["columns"][0]["type"]
    # CSV spells each value as JSON does (a nested one as its JSON text).
    text = b"".join(engine.answer(query, "csv", 10)).decode()
    (header, first, second) = list(csv.reader(io.StringIO(text)))
    assert header == ["v", "o"] and second == ["", "2"]
    first = first[:1]
    if expected is None:
        assert first == [""]
    elif case.startswith(NESTED):
        assert strict(first[0]) == expected
    elif isinstance(expected, str) and not case.startswith(("double", "float")):
        assert first[0] == expected
    elif isinstance(expected, bool):
        assert first[0] == "true"
    elif not case.startswith(("double", "float")):
        assert type(expected)(first[0]) == expected


PLAIN = [c for c in CASES if c[0] in (
    "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint",
    "uinteger", "ubigint", "double", "double big", "double nan", "double inf", "double -inf",
    "varchar", "varchar control", "date", "date infinity", "date -infinity", "date bc", "null",
)]  # fmt: skip


@pytest.mark.parametrize(("case", "sql", "expected"), PLAIN, ids=[c[0] for c in PLAIN])
def test_small_answers_encoded_in_python_match_duckdb(
    engine, monkeypatch, case, sql, expected
) -> None:
    """The Python path for small plain answers writes what DuckDB's own encoder writes."""
    monkeypatch.setattr(engine_module, "DIRECT_S", float("inf"))  # however slow the machine
    query = f"SELECT {sql} AS v, 'x' AS s, 2.5::DOUBLE AS d FROM range(3)"
    first = strict(engine.answer(query, "json", 10).body)  # learns the shape in DuckDB
    known = engine._known[(query, engine.catalog_seq)]
    assert known.shape.python and known.small
    second = strict(engine.answer(query, "json", 10).body)
    assert first["rows"] == second["rows"] == [[expected, "x", 2.5]] * 3
    truncated = strict(engine.answer(query, "json", 2).body)
    assert (truncated["rows"], truncated["truncated"]) == ([[expected, "x", 2.5]] * 2, True)


def test_json_rows_truncate_and_count_alike_on_both_paths(engine, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "DIRECT_S", float("inf"))
    query = "SELECT range AS n FROM range(40)"
    for max_rows in (5, 40, 100):
        bodies = [strict(engine.answer(query, "json", max_rows).body) for _ in range(2)]
        for doc in bodies:
            assert doc["row_count"] == min(max_rows, 40)
            assert doc["truncated"] is (max_rows < 40)
            assert doc["rows"] == [[i] for i in range(min(max_rows, 40))]
