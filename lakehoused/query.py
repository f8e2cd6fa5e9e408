"""DuckDB engine: one view per dataset, a sandboxed connection, limits, and result encoding.

The same engine serves `lakehoused sql` and the HTTP server: queries run concurrently from
many threads, each on a fresh cursor of one in-memory DuckDB database (DESIGN §6).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import functools
import hashlib
import heapq
import io
import json
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from lakehoused.errors import ForbiddenQuery, QueryError, QueryTimeout, StoreError
from lakehoused.schema import Column

# execute().to_arrow_table() warns that it copies the rows; for the small answers it serves
# (one JSON string a row) the copy is cheaper than what sql() costs per call.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

# Rows per Arrow batch pulled from DuckDB: large enough that per-batch Python overhead is
# noise, small enough that a truncated JSON answer reads little past its limit.
BATCH_ROWS = 8192

# The catalog seq the views show, a macro in the engine's own schema (which also holds the
# memory cache's tables): user SQL may read it, never change it.
_SEQ_MACRO = "_lakehoused.catalog_seq"
_SEQ = f"{_SEQ_MACRO}()"


@dataclass(frozen=True)
class ViewSpec:
    """One dataset as the engine sees it: its schema and the Parquet objects of its version."""

    columns: list[Column]
    paths: list[Path]
    bytes: int = 0  # the objects' Parquet bytes: what the memory cache budgets by


@dataclass
class QueryResult:
    """A running query: its columns, its rows as a stream, and the catalog state it saw.

    The stream owns a cursor and a time limit; reading it to the end, or `close()`, releases
    both.
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


class JsonAnswer(NamedTuple):
    """A whole JSON answer and the catalog seq it saw (for the X-Catalog-Seq header)."""

    body: bytes
    catalog_seq: int


class QueryEngine:
    """An in-memory DuckDB database holding one view per dataset, locked down for user SQL."""

    def __init__(
        self,
        object_root: Path,
        *,
        memory_limit: str = "2GB",
        threads: int | None = None,
        timeout_s: float = 30.0,
        cache_bytes: int = 0,
    ) -> None:
        self.timeout_s = timeout_s
        self.cache_bytes = cache_bytes
        self._datasets_dir = Path(object_root).resolve() / "datasets"
        # Extensions must never be fetched or loaded behind the user's back: off from the start.
        self._con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        self._con.execute("CREATE SCHEMA _lakehoused")
        self._con.execute(f"CREATE MACRO {_SEQ_MACRO}() AS 0")
        self._lock_down(memory_limit, threads)
        self._seq = 0
        # name -> (the SQL that defines its view now, its cache table or None)
        self._views: dict[str, tuple[str, str | None]] = {}
        self._sync_lock = threading.Lock()  # one catalog change at a time
        self._cursor_lock = threading.Lock()  # the parent connection is not thread-safe
        self._idle: list[duckdb.DuckDBPyConnection] = []  # cursors between queries
        self._shapes: dict[tuple[str, int], _JsonShape] = {}

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

    def _take_cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            if self._idle:
                return self._idle.pop()
            return self._con.cursor()

    def _return_cursor(
        self, cur: duckdb.DuckDBPyConnection, *, reusable: bool, rollback: bool = True
    ) -> None:
        if reusable and rollback:
            try:
                cur.execute("ROLLBACK")  # read-only: ends the query's snapshot
            except duckdb.Error:
                reusable = False
        with self._cursor_lock:
            if reusable and len(self._idle) < _POOL_SIZE:
                self._idle.append(cur)
                return
        cur.close()

    @property
    def catalog_seq(self) -> int:
        """The seq of the catalog state the views show now."""
        return self._seq

    def sync(self, views: Mapping[str, ViewSpec], seq: int) -> None:
        """Make the views exactly `views` and record `seq`, in one DuckDB transaction.

        A query on another cursor sees either the old set or the new one, never a mix, and
        reports the seq that goes with what it saw. Unchanged views are left alone.

        Datasets that fit the memory cache (smallest first, `cache_bytes` of estimated
        memory) are loaded into DuckDB tables and their views read those: a point lookup or
        a LIMIT then costs a scan of memory, not a Parquet decode. Others read the objects.
        """
        cached = _fits_cache(views, self.cache_bytes)
        wanted = {name: _view_sql(name, spec, name in cached) for name, spec in views.items()}
        gone = {t for _, t in self._views.values() if t} - {t for _, t in wanted.values() if t}
        with self._sync_lock:
            cur = self._cursor()
            try:
                cur.execute("BEGIN TRANSACTION")
                for name in sorted(self._views.keys() - wanted.keys()):
                    cur.execute(f"DROP VIEW IF EXISTS {_ident(name)}")
                for name, (sql, _) in sorted(wanted.items()):
                    if self._views.get(name, ("", None))[0] != sql:
                        try:
                            cur.execute(sql)
                        except duckdb.Error as e:
                            raise StoreError(f"refresh view {name}: {e}") from e
                # Cached copies no view reads any more go in the same transaction: queries
                # already running keep their snapshot of them.
                for table in sorted(gone):
                    cur.execute(f"DROP TABLE IF EXISTS _lakehoused.{_ident(table)}")
                # A macro, not a table: a query reads it as a constant, in its own snapshot.
                cur.execute(f"CREATE OR REPLACE MACRO {_SEQ_MACRO}() AS {int(seq)}")
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
            self._views = wanted
            self._seq = seq

    def _begin(self, sql: str, timeout_s: float | None, *, bind: bool = True) -> _Session:
        """Check `sql`, take a cursor, arm the time limit, and open the query's transaction.

        The seq and the user's query share one transaction, hence one snapshot of the
        catalog: DuckDB takes it at the first read, and sync commits views and seq together.
        """
        session = _Session(self, _checked_statement(sql), timeout_s)
        try:
            ((session.seq,),) = session.cur.execute(f"BEGIN TRANSACTION; SELECT {_SEQ}").fetchall()
            if bind:
                session.relation = session.cur.sql(session.statement)
        except duckdb.Error as e:
            session.release()
            raise session.translate(e) from e
        return session

    def execute(self, sql: str, *, timeout_s: float | None = None) -> QueryResult:
        """Check `sql` is one SELECT, then start it on its own cursor and return its stream.

        The time limit covers the whole life of the result, streaming included: the deadline
        interrupts the cursor, and the query (or the next read) raises QueryTimeout.
        """
        session = self._begin(sql, timeout_s)
        try:
            # A relation streams; cursor.execute() would materialise the whole result first.
            source = session.relation.to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as e:
            session.release()
            raise session.translate(e) from e

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from source
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise session.translate(e) from e
            finally:
                session.release()

        reader = pa.RecordBatchReader.from_batches(source.schema, batches())
        return QueryResult(
            session.columns(), reader, session.seq, session.started, _release=session.release
        )

    def execute_json(
        self, sql: str, max_rows: int, *, timeout_s: float | None = None
    ) -> JsonAnswer:
        """The answer of `sql` as one JSON document, cut at `max_rows` with `"truncated": true`.

        `{"columns": [...], "rows": [[...]], "row_count", "truncated", "catalog_seq",
        "elapsed_ms"}`; dates and timestamps as ISO strings, DECIMAL exact (a fraction as a
        string), NaN and infinities as strings, BLOB as base64.

        DuckDB writes each row as a JSON array in parallel C++, so a 10,000-row answer costs
        a few milliseconds instead of tens in Python; the rows arrive back-to-back in one
        Arrow buffer and are spliced into the document without a Python object per row.
        """
        statement = _checked_statement(sql)
        shape = self._shapes.get((statement, self._seq))
        if shape is not None:
            # A query seen before at this catalog state: one statement, no transaction.
            answer = self._json_at_once(shape, max_rows, timeout_s)
            if answer is not None:
                return answer
        session = self._begin(sql, timeout_s, bind=False)
        try:
            shape = self._shapes.get((session.statement, session.seq))
            if shape is None:
                session.relation = session.cur.sql(session.statement)
                shape = _JsonShape.of(session, session.seq)
                if len(self._shapes) >= _SHAPES:
                    self._shapes.clear()
                self._shapes[(session.statement, session.seq)] = shape
            table = session.cur.sql(shape.sql(max_rows, exact=False)).to_arrow_table()
            if not pc.all(table.column(1)).as_py():
                # Rare: a double is NaN or infinite, which JSON lacks. Again, spelt out.
                table = session.cur.sql(shape.sql(max_rows, exact=True)).to_arrow_table()
        except duckdb.Error as e:
            raise session.translate(e) from e
        finally:
            session.release()
        return _json_document(shape.columns, table, max_rows, session)

    def _json_at_once(
        self, shape: _JsonShape, max_rows: int, timeout_s: float | None
    ) -> JsonAnswer | None:
        """The answer from one auto-committed statement that also reads the catalog seq,
        so views and seq come from one snapshot; None when that cannot be shown (no row to
        carry the seq, another catalog state, a NaN) and the transaction path must answer."""
        session = _Session(self, shape.statement, timeout_s, transaction=False)
        try:
            # execute(), not sql(): for the small answers this path serves it is faster.
            table = session.cur.execute(shape.sql(max_rows, exact=False, seq=True)).to_arrow_table()
        except duckdb.Error as e:
            session.release()
            raise session.translate(e) from e
        session.release()
        if table.num_rows == 0 or not pc.all(table.column(1)).as_py():
            return None
        session.seq = table.column(2)[0].as_py()
        if session.seq != shape.seq:
            return None
        return _json_document(shape.columns, table, max_rows, session)

    def close(self) -> None:
        """Close the database; results still streaming fail from here on."""
        with self._cursor_lock:
            idle, self._idle = self._idle, []
        for cur in idle:
            cur.close()
        self._con.close()


_SHAPES = 1024  # remembered answer shapes, per (statement, catalog seq)


@dataclass(frozen=True)
class _JsonShape:
    """What execute_json needs to know of a statement: its columns and how to wrap it."""

    statement: str
    seq: int  # the catalog state it was bound at
    columns: list[dict]
    kinds: list[str]  # type names: no DuckDB object outlives its query

    @classmethod
    def of(cls, session: _Session, seq: int) -> _JsonShape:
        """The shape of the session's bound statement."""
        columns = session.columns()
        return cls(session.statement, seq, columns, [c["type"] for c in columns])

    def sql(self, max_rows: int, *, exact: bool, seq: bool = False) -> str:
        """The statement wrapped to give each row as `[...],` and whether its doubles are
        all finite (bare doubles are a third cheaper, but NaN is not JSON)."""
        aliases = [f"c{i}" for i in range(len(self.kinds))]
        pairs = list(zip(aliases, self.kinds, strict=True))
        values = ", ".join(_json_value(a, k, exact) for a, k in pairs)
        doubles = [a for a, k in pairs if k in ("DOUBLE", "FLOAT")]
        finite = (
            " AND ".join(f"isfinite({a})" for a in doubles) if doubles and not exact else "true"
        )
        catalog = f", {_SEQ}" if seq else ""
        return (
            f"SELECT json_array({values}) || ',', {finite}{catalog} FROM (\n{self.statement}\n) "
            f"AS _user({', '.join(aliases)}) LIMIT {int(max_rows) + 1}"
        )


@functools.lru_cache(maxsize=4096)
def _statement_or_error(sql: str) -> tuple[str, type[QueryError] | None, str]:
    # Only strings are kept: an exception would keep its traceback's DuckDB objects alive.
    try:
        return check_statement(sql), None, ""
    except QueryError as e:
        return "", type(e), str(e)


def _checked_statement(sql: str) -> str:
    """check_statement, remembered per text: parsing is a pure function of it."""
    statement, error, message = _statement_or_error(sql)
    if error is not None:
        raise error(message)
    return statement


class _Deadlines:
    """One thread for every query's time limit (a Timer thread per query costs ~0.2 ms)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Callable[[], None]] = {}  # only the live ones
        self._next = 0
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="query-deadlines").start()

    def add(self, delay_s: float, action: Callable[[], None]) -> int:
        """Run `action` after `delay_s` unless cancelled; return the token to cancel it."""
        with self._cond:
            self._next += 1
            self._actions[self._next] = action
            heapq.heappush(self._heap, (monotonic() + delay_s, self._next))
            self._cond.notify()
            return self._next

    def cancel(self, token: int) -> None:
        """The query finished in time: forget its action (and the cursor it holds)."""
        with self._cond:
            self._actions.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > monotonic():
                    timeout = self._heap[0][0] - monotonic() if self._heap else None
                    self._cond.wait(timeout)
                _, token = heapq.heappop(self._heap)
                action = self._actions.pop(token, None)
            if action is not None:
                action()
            del action  # hold no cursor while waiting for the next deadline


_DEADLINES = _Deadlines()
_POOL_SIZE = 32  # idle cursors kept: a new one costs ~0.4 ms


class _Session:
    """One query's cursor, time limit and transaction; `release` ends all three once."""

    def __init__(
        self,
        engine: QueryEngine,
        statement: str,
        timeout_s: float | None,
        *,
        transaction: bool = True,
    ) -> None:
        self.engine, self.statement = engine, statement
        self.limit = engine.timeout_s if timeout_s is None else timeout_s
        self.transaction = transaction
        self.started = perf_counter()
        self.cur = engine._take_cursor()
        self.seq = 0
        self.relation: duckdb.DuckDBPyRelation
        self._guard = threading.Lock()
        self._timed_out = self._closed = False
        self._token = _DEADLINES.add(self.limit, self._interrupt)

    def _interrupt(self) -> None:
        with self._guard:
            if not self._closed:
                self._timed_out = True
                self.cur.interrupt()

    def columns(self) -> list[dict]:
        """The answer's columns as the API shows them."""
        return [
            {"name": n, "type": _type_name(t)}
            for n, t in zip(self.relation.columns, self.relation.types, strict=True)
        ]

    def translate(self, e: Exception) -> QueryError:
        """A DuckDB error as the error the API reports."""
        if self._timed_out:
            return QueryTimeout(
                f"query took longer than {self.limit:g} s; raise server.query_timeout_s"
            )
        return _query_error(e)

    def release(self) -> None:
        """End the transaction and hand the cursor back (safe to call more than once)."""
        _DEADLINES.cancel(self._token)
        with self._guard:
            if self._closed:
                return
            self._closed = True
        self.engine._return_cursor(
            self.cur, reusable=not self._timed_out, rollback=self.transaction
        )


def check_statement(sql: str) -> str:
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
    # The statement alone, without a trailing semicolon, so it can be wrapped.
    return statements[0].query.strip().rstrip(";").strip()


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


# In memory a dataset takes about this many times its Parquet bytes (measured: the 500k-row
# workers file, 13 MB of Parquet, is 79 MB as a DuckDB table).
CACHE_EXPANSION = 8


def _fits_cache(views: Mapping[str, ViewSpec], budget: int) -> set[str]:
    """The datasets held in memory: smallest first, while their estimate fits the budget."""
    chosen, used = set(), 0
    for name, spec in sorted(views.items(), key=lambda item: (item[1].bytes, item[0])):
        need = spec.bytes * CACHE_EXPANSION
        if used + need > budget:
            break
        chosen.add(name)
        used += need
    return chosen


def _view_sql(name: str, spec: ViewSpec, cached: bool) -> tuple[str, str | None]:
    """The SQL defining a dataset's view, and the cache table it reads (None: the objects)."""
    # union_by_name: an older part lacking a newer column reads it as NULL.
    columns = ", ".join(_ident(c.name) for c in spec.columns)
    # Absolute already (the object cache's root is); resolve() would cost a syscall a part.
    paths = ", ".join(_literal(os.path.abspath(p)) for p in spec.paths)
    source = f"SELECT {columns} FROM read_parquet([{paths}], union_by_name = true)"
    if not cached:
        return f"CREATE OR REPLACE VIEW {_ident(name)} AS {source}", None
    # The table is named after its content, so an unchanged dataset keeps its copy.
    table = f"{name}@{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    sql = (
        f"CREATE TABLE IF NOT EXISTS _lakehoused.{_ident(table)} AS {source}; "
        f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT * FROM _lakehoused.{_ident(table)}"
    )
    return sql, table


def _json_value(column: str, name: str, exact: bool = True) -> str:
    """SQL for one value inside json_array, written as the API promises for its type.

    With `exact` false, doubles go in bare, which is a third cheaper; the caller checks the
    output for the NaN or Infinity that JSON cannot hold.
    """
    c = column
    if name in ("DOUBLE", "FLOAT") and not exact:
        return c
    if name in ("DOUBLE", "FLOAT"):
        # JSON has no NaN or Infinity: those become strings.
        return (
            f"CASE WHEN {c} IS NULL OR isfinite({c}) THEN to_json({c}) "
            f"WHEN isnan({c}) THEN to_json('NaN') WHEN {c} > 0 THEN to_json('Infinity') "
            f"ELSE to_json('-Infinity') END"
        )
    if name == "TIMESTAMP" or name.startswith("TIMESTAMP_"):
        return f"to_json(regexp_replace(strftime({c}, '%Y-%m-%dT%H:%M:%S.%f'), '\\.0+$', ''))"
    if name == "TIMESTAMP WITH TIME ZONE":
        return (
            "to_json(regexp_replace(strftime(timezone('UTC', "
            f"{c}), '%Y-%m-%dT%H:%M:%S.%f'), '\\.0+$', '') || 'Z')"
        )
    if name.startswith("DECIMAL") and not name.endswith(",0)"):
        return f"to_json({c}::VARCHAR)"  # exact: a float would lose digits
    if name == "BLOB":
        return f"to_json(base64({c}))"
    if name in ("TIME", "INTERVAL", "UUID", "TIME WITH TIME ZONE") or name.startswith("BIT"):
        return f"to_json({c}::VARCHAR)"
    return c  # json_array converts it itself, at half the cost of to_json


def _json_document(
    columns: list[dict], table: pa.Table, max_rows: int, session: _Session
) -> JsonAnswer:
    """The JSON answer around the rows DuckDB wrote."""
    head = _dumps({"columns": columns})[:-1] + b',"rows":['
    tail = _dumps(
        {
            "row_count": min(table.num_rows, max_rows),
            "truncated": table.num_rows > max_rows,
            "catalog_seq": session.seq,
            "elapsed_ms": round((perf_counter() - session.started) * 1000, 3),
        }
    )[1:]
    # One copy of the rows, straight from DuckDB's Arrow buffers into the document.
    body = b"".join([head, *_row_buffers(table.column(0), max_rows), b"],", tail])
    return JsonAnswer(body, session.seq)


def _row_buffers(column: pa.ChunkedArray, max_rows: int) -> list[memoryview]:
    """The first max_rows rows, each `[...],`, as views of the Arrow buffers (no copy),
    without the last comma."""
    parts: list[memoryview] = []
    left = max_rows
    for chunk in column.chunks:
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
    if parts:
        parts[-1] = parts[-1][:-1]
    return parts


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
