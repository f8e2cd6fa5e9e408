"""The one value encoder: how every DuckDB type is written in JSON, NDJSON and CSV answers.

Values are encoded inside DuckDB, by SQL wrapped around the user's statement (DuckDB writes
JSON in parallel C++, and one encoder serves every format). `value_sql` is the single
definition of each type's form; README "HTTP API" documents it. Small answers of plain
types are encoded in Python instead (`python_rows`), which skips planning the wrapper;
that path covers only types whose Python form is byte-for-byte the same value, and the
encoder test checks the two agree.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv

from lakehoused.query.sandbox import ident, literal

# Types json_array/json_object write as the API wants them without help: numbers, booleans,
# strings, and the types whose JSON is DuckDB's own text for them (a date, a time, an
# interval, a UUID, a BIT string, an ENUM label, WKT for a geometry).
_NATIVE = {
    "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint",
    "uinteger", "ubigint", "hugeint", "uhugeint", "bignum", "varchar", "date", "time",
    "time with time zone", "time_ns", "interval", "uuid", "bit", "enum", "geometry", "null",
}  # fmt: skip
_TIMESTAMPS = {"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"}
_ZONED = {"timestamp with time zone", "timestamptz_ns"}
_FLOATS = {"double", "float"}
# Written as they are in CSV too (pyarrow writes them as DuckDB would); other types are
# written as their JSON text, so every format spells a value the same way.
_CSV_NATIVE = {
    "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint",
    "uinteger", "ubigint", "double", "float", "varchar",
}  # fmt: skip
# Types the Python path encodes exactly as DuckDB would (checked by tests/test_encode.py).
_PYTHON = {
    "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "VARCHAR", "DOUBLE", "DATE", '"NULL"',
}  # fmt: skip

NATIVE, TEXT, JSON = "native", "text", "json"  # what value_sql's expression is


def type_name(kind: duckdb.DuckDBPyType) -> str:
    """A type as the API names it."""
    # DuckDB spells the type of a bare NULL with quotes ('"NULL"').
    return str(kind).strip('"')


def _children(kind: duckdb.DuckDBPyType) -> list[tuple[str, duckdb.DuckDBPyType]]:
    return list(kind.children)


def _plain(kind: duckdb.DuckDBPyType) -> bool:
    """True when DuckDB's own JSON for every value of this type is the API's."""
    tid = kind.id
    if tid == "varchar":
        return True  # JSON is a VARCHAR alias: embedded as the JSON it holds
    if tid == "decimal":
        return dict(_children(kind))["scale"] == 0
    if tid in _NATIVE:
        return True
    if tid in ("list", "array"):
        return _plain(_children(kind)[0][1])
    if tid in ("struct", "tuple"):
        return all(_plain(t) for _, t in _children(kind))
    if tid == "map":
        return _plain(_children(kind)[1][1])
    if tid == "union":
        return all(_plain(t) for _, t in _children(kind)[1:])
    return False


def value_sql(
    expr: str, kind: duckdb.DuckDBPyType, *, exact: bool = True, depth: int = 0
) -> tuple[str, str]:
    """SQL for one value of `kind` as the API writes it, and what that SQL yields:

    NATIVE (json_array writes it as it is, nested values included), TEXT (a VARCHAR that
    becomes a JSON string) or JSON (a JSON value, embedded as it is). With `exact` false a
    top-level double is left bare, which is a third cheaper; the caller must then check
    for the NaN and infinities JSON cannot hold (`finite_sql`).
    """
    tid = kind.id
    if _plain(kind):
        return expr, NATIVE
    if tid in _FLOATS:
        if tid == "float":
            # Its shortest text, not the double it widens to (1.1, not 1.100000023841858).
            expr = f"({expr})::VARCHAR::DOUBLE"
        if not exact and depth == 0:
            return expr, NATIVE
        return (
            f"CASE WHEN ({expr}) IS NULL OR isfinite({expr}) THEN to_json({expr}) "
            f"WHEN isnan({expr}) THEN '\"NaN\"'::JSON "
            f"WHEN ({expr}) > 0 THEN '\"Infinity\"'::JSON ELSE '\"-Infinity\"'::JSON END",
            JSON,
        )
    if tid == "decimal":
        return f"({expr})::VARCHAR", TEXT  # exact: a double would lose digits
    if tid == "blob":
        return f"base64({expr})", TEXT
    if tid in _TIMESTAMPS:
        # DuckDB's text with a T; infinities and BC dates keep DuckDB's spelling.
        return rf"regexp_replace(({expr})::VARCHAR, '^(\d+-\d\d-\d\d) (\d)', '\1T\2')", TEXT
    if tid in _ZONED:
        # The engine runs in UTC, so the text ends in +00: ISO 8601 spells that Z.
        return (
            rf"regexp_replace(({expr})::VARCHAR, "
            rf"'^(\d+-\d\d-\d\d) (\d\d:\d\d:\d\d(\.\d+)?)\+00$', '\1T\2Z')",
            TEXT,
        )
    var = f"x{depth}"
    if tid in ("list", "array"):
        inner, _ = value_sql(var, _children(kind)[0][1], depth=depth + 1)
        return f"list_transform({expr}, lambda {var}: {inner})", NATIVE
    if tid == "struct":
        fields = ", ".join(
            f"{ident(name)} := {value_sql(f'struct_extract({expr}, {literal(name)})', t, depth=depth + 1)[0]}"
            for name, t in _children(kind)
        )
        return f"CASE WHEN ({expr}) IS NULL THEN NULL ELSE struct_pack({fields}) END", NATIVE
    if tid == "tuple":
        items = ", ".join(
            value_sql(f"struct_extract({expr}, {i})", t, depth=depth + 1)[0]
            for i, (_, t) in enumerate(_children(kind), start=1)
        )
        return f"CASE WHEN ({expr}) IS NULL THEN NULL ELSE row({items}) END", NATIVE
    if tid == "map":
        # Keys stay as they are: JSON object keys are their text.
        value, _ = value_sql(f"{var}.value", _children(kind)[1][1], depth=depth + 1)
        return (
            f"map_from_entries(list_transform(map_entries({expr}), "
            f"lambda {var}: struct_pack(key := {var}.key, value := {value})))",
            NATIVE,
        )
    if tid == "union":
        branches = " ".join(
            f"WHEN {literal(name)} THEN json_object({literal(name)}, "
            f"{value_sql(f'union_extract({expr}, {literal(name)})', t, depth=depth + 1)[0]})"
            for name, t in _children(kind)[1:]
        )
        return f"CASE union_tag({expr}) {branches} END", JSON
    # VARIANT and any type newer than this code: its text, which is always valid JSON.
    return f"({expr})::VARCHAR", TEXT


@dataclass(frozen=True)
class Shape:
    """What the encoders need to know of a statement's answer: strings only, so that no
    DuckDB object outlives its query."""

    statement: str
    columns: list[dict]  # [{"name", "type"}] as the API shows them
    values: tuple[str, ...]  # exact JSON value SQL per column, over c0, c1, ...
    fast_values: tuple[str, ...]  # the same with top-level doubles bare
    floats: tuple[str, ...]  # the aliases of top-level DOUBLE/FLOAT columns
    csv_values: tuple[str, ...]
    python: bool  # every column has a type python_rows encodes
    doubles: tuple[int, ...]  # column indexes python_rows must check for NaN/infinity
    dates: tuple[int, ...]  # ... and for the infinite dates Python cannot hold
    head: bytes  # the JSON document up to its rows

    @classmethod
    def of(cls, statement: str, names: list[str], kinds: list[duckdb.DuckDBPyType]) -> Shape:
        """The shape of an answer with these column names and types."""
        aliases = [f"c{i}" for i in range(len(kinds))]
        exact = [value_sql(a, k) for a, k in zip(aliases, kinds, strict=True)]
        fast = [value_sql(a, k, exact=False)[0] for a, k in zip(aliases, kinds, strict=True)]
        csv = []
        for alias, kind, (sql, what) in zip(aliases, kinds, exact, strict=True):
            if kind.id in _CSV_NATIVE and type_name(kind) != "JSON":
                csv.append(alias)
            elif kind.id in ("list", "array", "struct", "tuple", "map", "union"):
                csv.append(f"to_json({sql})::VARCHAR")
            else:
                csv.append(sql if what == TEXT else f"({sql})::VARCHAR")
        spelled = [str(k) for k in kinds]
        columns = [{"name": n, "type": type_name(k)} for n, k in zip(names, kinds, strict=True)]
        return cls(
            statement=statement,
            columns=columns,
            values=tuple(sql for sql, _ in exact),
            fast_values=tuple(fast),
            floats=tuple(a for a, k in zip(aliases, kinds, strict=True) if k.id in _FLOATS),
            csv_values=tuple(csv),
            python=all(s in _PYTHON for s in spelled),
            doubles=tuple(i for i, s in enumerate(spelled) if s == "DOUBLE"),
            dates=tuple(i for i, s in enumerate(spelled) if s == "DATE"),
            head=b'{"columns":' + orjson.dumps(columns) + b',"rows":',
        )

    def _source(self) -> str:
        aliases = ", ".join(f"c{i}" for i in range(len(self.columns)))
        return f"(\n{self.statement}\n) AS _user({aliases})"

    def json_rows_sql(self, max_rows: int, *, exact: bool) -> str:
        """Each row as `[...],`, and whether its doubles are all finite (NaN is not JSON)."""
        values = self.values if exact else self.fast_values
        finite = (
            " AND ".join(f"isfinite({a})" for a in self.floats)
            if self.floats and not exact
            else "true"
        )
        return (
            f"SELECT json_array({', '.join(values)}) || ',', {finite} FROM {self._source()} "
            f"LIMIT {int(max_rows) + 1}"
        )

    def ndjson_sql(self) -> str:
        """Each row as one JSON object and a newline."""
        pairs = ", ".join(
            f"{literal(c['name'])}, {v}" for c, v in zip(self.columns, self.values, strict=True)
        )
        return f"SELECT json_object({pairs}) || chr(10) FROM {self._source()}"

    def csv_sql(self) -> str:
        """The columns as the CSV writer takes them."""
        return f"SELECT {', '.join(self.csv_values)} FROM {self._source()}"


_MAX_DATE, _MIN_DATE = dt.date.max, dt.date.min  # how DuckDB hands Python ±infinity


def python_rows(shape: Shape, rows: list[tuple]) -> bytes | None:
    """Rows fetched as Python values, as the JSON array DuckDB would have written; None when
    a value needs DuckDB's spelling (an infinite date)."""
    if shape.dates:
        for row in rows:
            for i in shape.dates:
                if row[i] == _MAX_DATE or row[i] == _MIN_DATE:
                    return None
    if shape.doubles:
        rows = [_finite(row, shape.doubles) for row in rows]
    return orjson.dumps(rows)


def _finite(row: tuple, doubles: tuple[int, ...]) -> tuple | list:
    for i in doubles:
        v = row[i]
        if v is not None and not math.isfinite(v):
            out = list(row)
            for j in doubles:
                w = out[j]
                if w is not None and not math.isfinite(w):
                    out[j] = "NaN" if w != w else ("Infinity" if w > 0 else "-Infinity")
            return out
    return row


def document(prefix: bytes, catalog_seq: int, elapsed_s: float) -> bytes:
    """A JSON answer: its columns and rows (`prefix`), then the catalog seq and time."""
    return b'%s,"catalog_seq":%d,"elapsed_ms":%.3f}' % (prefix, catalog_seq, elapsed_s * 1000)


def json_prefix(
    head: bytes, rows: Iterable[bytes | memoryview], count: int, truncated: bool
) -> bytes:
    """The document up to its catalog seq: columns, rows (JSON array text), count, flag."""
    tail = b',"row_count":%d,"truncated":%s' % (count, b"true" if truncated else b"false")
    return b"".join([head, *rows, tail])


def row_buffers(column: pa.ChunkedArray | pa.Array, max_rows: int) -> list[memoryview]:
    """The first max_rows strings of an Arrow string column back to back, as views of its
    buffers (no copy). DuckDB wrote each with its separator: the caller trims the last."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts: list[memoryview] = []
    left = max_rows
    for chunk in chunks:
        if left <= 0:
            break
        chunk = chunk.slice(0, left)
        left -= len(chunk)
        if len(chunk) == 0:
            continue
        if not pa.types.is_string(chunk.type):
            chunk = chunk.cast(pa.string())
        _, offsets_buffer, data = chunk.buffers()
        offsets = pa.Array.from_buffers(
            pa.int32(), len(chunk) + 1, [None, offsets_buffer], offset=chunk.offset
        )
        start, end = offsets[0].as_py(), offsets[len(chunk)].as_py()
        parts.append(memoryview(data)[start:end])
    return parts


def json_rows(column: pa.ChunkedArray, max_rows: int) -> list[bytes | memoryview]:
    """DuckDB's `[...],` rows as one JSON array (the last comma dropped)."""
    parts: list[bytes | memoryview] = [b"[", *row_buffers(column, max_rows)]
    if len(parts) > 1:
        parts[-1] = parts[-1][:-1]
    parts.append(b"]")
    return parts


def ndjson_chunks(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    """DuckDB's lines, one chunk per batch."""
    for batch in reader:
        if batch.num_rows:
            yield b"".join(row_buffers(batch.column(0), batch.num_rows))


def csv_chunks(reader: pa.RecordBatchReader, names: list[str]) -> Iterator[bytes]:
    """A header line, then the rows as CSV, one chunk per batch."""
    header = True
    for batch in reader:
        if batch.num_rows:
            yield _csv_bytes(pa.RecordBatch.from_arrays(batch.columns, names=names), header)
            header = False
    if header:  # an empty answer still names its columns
        empty = pa.Table.from_arrays([pa.array([], f.type) for f in reader.schema], names=names)
        yield _csv_bytes(empty, True)


def _csv_bytes(data: pa.RecordBatch | pa.Table, header: bool) -> bytes:
    sink = io.BytesIO()
    pa_csv.write_csv(data, sink, pa_csv.WriteOptions(include_header=header))
    return sink.getvalue()


def arrow_chunks(reader: pa.RecordBatchReader) -> Iterator[bytes]:
    """The answer in the Arrow IPC stream format, one chunk per batch."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            yield _drain(sink)
    yield _drain(sink)  # the end-of-stream marker


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data
