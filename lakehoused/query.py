"""DuckDB engine: one view per dataset, a sandboxed connection, limits, and result encoding.

The same engine serves `lakehoused sql` and the HTTP server: queries run concurrently from
many threads, each on a fresh cursor of one in-memory DuckDB database (DESIGN §6).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import io
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from lakehoused.errors import ForbiddenQuery, QueryError, QueryTimeout, StoreError
from lakehoused.schema import Column

# Rows per Arrow batch pulled from DuckDB: large enough that per-batch Python overhead is
# noise, small enough that a truncated JSON answer reads little past its limit.
BATCH_ROWS = 8192

# The engine's own schema: user SQL may read it (it holds only the seq) but never write it.
_STATE = '"_lakehoused"."catalog"'


@dataclass(frozen=True)
class ViewSpec:
    """One dataset as the engine sees it: its schema and the Parquet objects of its version."""

    columns: list[Column]
    paths: list[Path]


@dataclass
class QueryResult:
    """A running query: its columns, its rows as a stream, and the catalog state it saw.

    The stream owns a cursor and a timer; reading it to the end, or `close()`, releases both.
    """

    columns: list[dict]
    reader: pa.RecordBatchReader
    catalog_seq: int
    started: float
    _release: Callable[[], None] = field(default=lambda: None, repr=False)

    def close(self) -> None:
        """Stop the query and release its cursor (safe to call more than once)."""
        self._release()

    def __del__(self) -> None:
        # A result dropped unread must not hold its cursor until the timer fires.
        self._release()

    def __enter__(self) -> QueryResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class QueryEngine:
    """An in-memory DuckDB database holding one view per dataset, locked down for user SQL."""

    def __init__(
        self,
        object_root: Path,
        *,
        memory_limit: str = "2GB",
        threads: int | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.timeout_s = timeout_s
        self._datasets_dir = Path(object_root).resolve() / "datasets"
        # Extensions must never be fetched or loaded behind the user's back: off from the start.
        self._con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        self._con.execute(f"CREATE SCHEMA _lakehoused; CREATE TABLE {_STATE} (seq BIGINT NOT NULL)")
        self._con.execute(f"INSERT INTO {_STATE} VALUES (0)")
        self._lock_down(memory_limit, threads)
        self._seq = 0
        self._views: dict[str, str] = {}  # name -> the SQL that defines its view now
        self._sync_lock = threading.Lock()  # one catalog change at a time
        self._cursor_lock = threading.Lock()  # the parent connection is not thread-safe

    def _lock_down(self, memory_limit: str, threads: int | None) -> None:
        # The order matters (DESIGN §6): allowed_directories cannot be set once external
        # access is off, and nothing can be set once the configuration is locked.
        settings = [
            f"SET memory_limit = {_literal(memory_limit)}",
            *([f"SET threads = {int(threads)}"] if threads else []),
            # GLOBAL: a plain SET of these would only hold for this connection, not cursors.
            "SET GLOBAL python_enable_replacements = false",
            # Objects are immutable and content-addressed, so cached footers never go stale.
            "SET GLOBAL parquet_metadata_cache = true",
            # No temp directory: a query that outgrows memory_limit fails instead of spilling.
            "SET temp_directory = ''",
            "SET allow_community_extensions = false",
            f"SET allowed_directories = [{_literal(str(self._datasets_dir) + '/')}]",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ]
        for statement in settings:
            try:
                self._con.execute(statement)
            except duckdb.Error as e:
                raise QueryError(f"query engine setup: {statement}: {e}") from e

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            return self._con.cursor()

    @property
    def catalog_seq(self) -> int:
        """The seq of the catalog state the views show now."""
        return self._seq

    def sync(self, views: Mapping[str, ViewSpec], seq: int) -> None:
        """Make the views exactly `views` and record `seq`, in one DuckDB transaction.

        A query on another cursor sees either the old set or the new one, never a mix, and
        reports the seq that goes with what it saw. Unchanged views are left alone.
        """
        wanted = {name: _view_sql(name, spec) for name, spec in views.items()}
        with self._sync_lock:
            cur = self._cursor()
            try:
                cur.execute("BEGIN TRANSACTION")
                for name in sorted(self._views.keys() - wanted.keys()):
                    cur.execute(f"DROP VIEW IF EXISTS {_ident(name)}")
                for name, sql in sorted(wanted.items()):
                    if self._views.get(name) != sql:
                        try:
                            cur.execute(sql)
                        except duckdb.Error as e:
                            raise StoreError(f"refresh view {name}: {e}") from e
                cur.execute(f"UPDATE {_STATE} SET seq = ?", [seq])
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
            self._views = wanted
            self._seq = seq

    def execute(self, sql: str, *, timeout_s: float | None = None) -> QueryResult:
        """Check `sql` is one SELECT, then start it on a fresh cursor and return its stream.

        The time limit covers the whole life of the result, streaming included: a timer
        interrupts the cursor, and the query (or the next read) raises QueryTimeout.
        """
        check_statement(sql)
        limit = self.timeout_s if timeout_s is None else timeout_s
        started = perf_counter()
        cur = self._cursor()
        guard = threading.Lock()
        state = {"timed_out": False, "closed": False}

        def interrupt() -> None:
            with guard:
                if not state["closed"]:
                    state["timed_out"] = True
                    cur.interrupt()

        def release() -> None:
            timer.cancel()
            with guard:
                if not state["closed"]:
                    state["closed"] = True
                    cur.close()  # ends the read-only transaction too

        def translate(e: Exception) -> QueryError:
            if state["timed_out"]:
                return QueryTimeout(
                    f"query took longer than {limit:g} s; raise server.query_timeout_s"
                )
            return _query_error(e)

        timer = threading.Timer(limit, interrupt)
        timer.daemon = True
        timer.start()
        try:
            # The seq and the user's query share one transaction, hence one snapshot of the
            # catalog: DuckDB takes it at the first read, and sync commits views and seq together.
            cur.execute("BEGIN TRANSACTION")
            ((seq,),) = cur.execute(f"SELECT seq FROM {_STATE}").fetchall()
            # A relation streams; cursor.execute() would materialise the whole result first.
            relation = cur.sql(sql)
            columns = [
                {"name": n, "type": _type_name(t)}
                for n, t in zip(relation.columns, relation.types, strict=True)
            ]
            source = relation.to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as e:
            release()
            raise translate(e) from e

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from source
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise translate(e) from e
            finally:
                release()

        reader = pa.RecordBatchReader.from_batches(source.schema, batches())
        return QueryResult(columns, reader, seq, started, _release=release)

    def close(self) -> None:
        """Close the database; results still streaming fail from here on."""
        self._con.close()


def check_statement(sql: str) -> None:
    """Accept exactly one statement of type SELECT; refuse anything else with ForbiddenQuery.

    DuckDB's own guards do not stop `COPY … TO` or `ATTACH` inside an allowed directory, nor
    `EXPLAIN ANALYZE COPY` (DESIGN §6): this check is what does.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(str(e)) from e
    if not statements:
        raise QueryError("no SQL statement given; send one SELECT")
    kinds = [s.type.name for s in statements]
    if kinds != ["SELECT"]:
        found = kinds[0] if len(kinds) == 1 else f"{len(kinds)} statements ({', '.join(kinds)})"
        raise ForbiddenQuery(f"only one SELECT statement per request; got {found}")


def encode_json(result: QueryResult, max_rows: int) -> bytes:
    """The result as one JSON document, cut at `max_rows` with `"truncated": true`.

    Stops pulling batches as soon as it holds max_rows + 1 rows, so a huge result costs no
    more than its first batches.
    """
    try:
        held: list[pa.RecordBatch] = []
        count = 0
        for batch in result.reader:
            held.append(batch)
            count += batch.num_rows
            if count > max_rows:
                break
    finally:
        result.close()
    table = pa.Table.from_batches(held, schema=result.reader.schema).slice(0, max_rows)
    rows = list(zip(*_json_columns(table), strict=True)) if table.num_columns else []
    document = {
        "columns": result.columns,
        "rows": rows,
        "row_count": len(rows),
        "truncated": count > max_rows,
        "catalog_seq": result.catalog_seq,
        "elapsed_ms": round((perf_counter() - result.started) * 1000, 3),
    }
    return _dumps(document)


def iter_ndjson(result: QueryResult) -> Iterator[bytes]:
    """One JSON object per row, `{"column": value}`, streamed one batch at a time."""
    with result:
        names = result.reader.schema.names
        for batch in result.reader:
            lines = [
                _dumps(dict(zip(names, row, strict=True))) + b"\n"
                for row in zip(*_json_columns(batch), strict=True)
            ]
            if lines:
                yield b"".join(lines)


def iter_csv(result: QueryResult) -> Iterator[bytes]:
    """A header line, then the rows as CSV, streamed one batch at a time."""
    with result:
        header = True
        for batch in result.reader:
            if batch.num_rows:
                yield _csv_bytes(batch, header)
                header = False
        if header:  # an empty result still names its columns
            yield _csv_bytes(result.reader.schema.empty_table(), True)


def iter_arrow(result: QueryResult) -> Iterator[bytes]:
    """The result in the Arrow IPC stream format, streamed one batch at a time."""
    with result:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, result.reader.schema) as writer:
            for batch in result.reader:
                writer.write_batch(batch)
                yield _drain(sink)
        yield _drain(sink)  # the end-of-stream marker


# --- helpers ---------------------------------------------------------------------------


def _view_sql(name: str, spec: ViewSpec) -> str:
    # union_by_name: an older part lacking a newer column reads it as NULL.
    columns = ", ".join(_ident(c.name) for c in spec.columns)
    paths = ", ".join(_literal(str(Path(p).resolve())) for p in spec.paths)
    return (
        f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT {columns} "
        f"FROM read_parquet([{paths}], union_by_name = true)"
    )


def _type_name(kind: duckdb.DuckDBPyType) -> str:
    # DuckDB spells the type of a bare NULL with quotes ('"NULL"').
    return str(kind).strip('"')


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _query_error(e: Exception) -> QueryError:
    message = str(e)
    if isinstance(e, duckdb.PermissionException) or message.startswith("Permission Error"):
        return ForbiddenQuery(message)
    if "configuration has been locked" in message:
        # Some table functions (enable_logging) change settings: only the lock stops them.
        return ForbiddenQuery(message)
    if isinstance(e, duckdb.OutOfMemoryException) or message.startswith("Out of Memory Error"):
        # DuckDB's text ends with advice about temp directories that does not apply here.
        first = message.split("\n", 1)[0]
        return QueryError(f"{first}; the query needs more memory than server.memory_limit")
    return QueryError(message)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _drain(sink: io.BytesIO) -> bytes:
    data = sink.getvalue()
    sink.seek(0)
    sink.truncate()
    return data


def _json_columns(data: pa.Table | pa.RecordBatch) -> list[list]:
    """Each column as a list of JSON-ready values, converted a whole column at a time."""
    return [_json_column(column) for column in data.columns]


def _json_column(column: pa.Array | pa.ChunkedArray) -> list:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return _iso_timestamps(column).to_pylist()
    if pa.types.is_date(kind) or pa.types.is_time(kind):
        return pc.cast(column, pa.string()).to_pylist()
    if pa.types.is_decimal(kind):
        # Exact either way: integers stay JSON integers, fractions become strings so that no
        # digit is lost to a float.
        if kind.scale > 0:
            return pc.cast(column, pa.string()).to_pylist()
        if kind.precision <= 18:
            return pc.cast(column, pa.int64()).to_pylist()
        return [None if v is None else int(v) for v in column.to_pylist()]
    if pa.types.is_floating(kind):
        values = column.to_pylist()
        if pc.all(pc.is_finite(column), skip_nulls=True).as_py() is False:
            values = [_json_float(v) for v in values]
        return values
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        return [base64.b64encode(v).decode() if v is not None else None for v in column.to_pylist()]
    if pa.types.is_nested(kind):
        return [_json_nested(v) for v in column.to_pylist()]
    return column.to_pylist()


def _iso_timestamps(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    # Arrow writes "2024-01-02 03:04:05.000000"; ISO 8601 wants the T, and a zone-aware
    # value is given in UTC with a Z rather than Arrow's "+0000".
    zoned = column.type.tz is not None
    if zoned:
        column = pc.cast(column, pa.timestamp(column.type.unit))  # the UTC wall clock
    text = pc.cast(column, pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    text = pc.replace_substring_regex(text, r"\.0+$", "")
    return pc.binary_join_element_wise(text, "Z", "") if zoned else text


def _json_float(value: float | None) -> float | str | None:
    if value is None or (value == value and value not in (float("inf"), float("-inf"))):
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _json_nested(value: Any) -> Any:
    # Lists, structs and maps arrive as Python objects; their leaves need the same care.
    if isinstance(value, dict):
        return {k: _json_nested(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_nested(v) for v in value]
    if isinstance(value, float):
        return _json_float(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return _json_default(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # Exact: an integer stays a JSON integer; a fraction is a string so no digit is lost.
        return (
            int(value)
            if value == value.to_integral_value() and value.as_tuple().exponent >= 0
            else str(value)
        )
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


# One encoder, built once: json.dumps with options builds a new one per call. allow_nan=False:
# a NaN that slipped through would make the document invalid JSON.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
)


def _csv_bytes(data: pa.RecordBatch | pa.Table, header: bool) -> bytes:
    # The CSV writer has no form for nested values: write those as JSON text.
    if any(pa.types.is_nested(f.type) for f in data.schema):
        arrays = [
            pa.array(
                [None if v is None else _dumps(_json_nested(v)).decode() for v in col.to_pylist()],
                pa.string(),
            )
            if pa.types.is_nested(col.type)
            else col
            for col in data.columns
        ]
        data = pa.Table.from_arrays(arrays, names=data.schema.names)
    sink = io.BytesIO()
    pa_csv.write_csv(data, sink, pa_csv.WriteOptions(include_header=header))
    return sink.getvalue()
