"""The query engine: one view per dataset in a sandboxed DuckDB, answers, limits, the cache.

The same engine serves `lakehoused sql` and the HTTP server: queries run concurrently from
many threads, each on its own cursor of one in-memory DuckDB database (DESIGN §6).

Which catalog state a query saw: `sync` bumps a generation counter before it swaps the
views and again after it recorded the new seq (a seqlock). A query that starts and ends its
reading of the catalog inside one even generation saw exactly the views of the seq recorded
then; one that overlaps a sync runs again inside a transaction that reads the seq from the
same snapshot as the views.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import NamedTuple, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lakehoused.errors import QueryError, StoreError
from lakehoused.query import cache as results
from lakehoused.query import encode
from lakehoused.query.sandbox import (
    REMEMBERED_TEXT,
    checked_statement,
    ident,
    literal,
    lock_down,
)
from lakehoused.query.session import SEQ_MACRO, Cancel, Session
from lakehoused.schema import Column

# execute().to_arrow_table() warns that it copies the rows; for the answers it serves (one
# JSON string a row) the copy is cheaper than what sql() costs per call.
warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)

T = TypeVar("T")

# Rows per Arrow batch pulled from DuckDB: large enough that per-batch Python overhead is
# noise, small enough that a truncated JSON answer reads little past its limit.
BATCH_ROWS = 8192
# Answers of at most this many rows, seen before, are fetched as Python values and encoded
# there: planning the JSON wrapper costs more than encoding a few dozen rows.
SMALL_ROWS = 64
# ... but only when its last run took less than this: DuckDB runs a result fetched row by
# row (execute().fetchmany) in fewer threads, which made a 13 ms aggregate take 23 ms.
DIRECT_S = 0.002
# A JSON answer whose last run took less than this may run on the caller's thread (the
# server's event loop): a hand-off to a thread and back costs a good part of it, more so
# on a busy machine, where waking a thread waits for a core.
QUICK_S = 0.001
PINNED_VIEWS = 64  # past versions ("name@3") an engine keeps views of
# In memory a dataset takes about this many times its Parquet bytes (measured: the 500k-row
# workers file, 13 MB of Parquet, is 79 MB as a DuckDB table).
CACHE_EXPANSION = 8
FORMATS = ("json", "ndjson", "csv", "arrow")

_POOL_SIZE = 32  # idle cursors kept
_REMEMBERED = 4096  # statements whose reads, shapes and tags are remembered


@dataclass(frozen=True)
class ViewSpec:
    """One dataset as the engine sees it: its schema and the Parquet objects of its version."""

    columns: list[Column]
    paths: list[Path]
    bytes: int = 0  # the objects' Parquet bytes: what the memory cache budgets by


@dataclass(frozen=True)
class _State:
    seq: int
    contents: Mapping[str, str]  # dataset -> content id (cache.content_id)


@dataclass
class QueryResult:
    """A running query: its columns, its rows as an Arrow stream, and the catalog state it saw.

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


@dataclass(frozen=True)
class Answer:
    """A whole answer: its bytes, the catalog state it is for, and how it may be cached.

    `etag` is None when the answer is not a function of its key (a non-deterministic
    statement); `cache` says `hit` (kept from an earlier run), `miss` (computed now) or
    `bypass` (not cacheable, or the result cache is off).
    """

    body: bytes
    catalog_seq: int
    etag: str | None
    cache: str


class Stream:
    """An answer sent as it is produced (ndjson, csv, arrow); iterate it for its chunks."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        session: Session,
        etag: str | None,
        cache: str,
    ) -> None:
        self._chunks = chunks
        self._session = session
        self.rows = 0  # rows read so far (for /metrics)
        self.catalog_seq = session.seq
        self.etag = etag
        self.cache = cache

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __next__(self) -> bytes:
        return next(self._chunks)

    def cancel(self) -> None:
        """Interrupt the query from any thread (a chunk being read raises QueryCancelled)."""
        self._session.cancel()

    def close(self) -> None:
        """Release the cursor; call only while no chunk is being read."""
        self._chunks.close()  # type: ignore[attr-defined]
        self._session.release(finished=False)  # a stream never started has no finally

    def __del__(self) -> None:
        # A stream dropped unread must not hold its cursor until the timer fires.
        self._session.release(finished=False)


@dataclass(frozen=True)
class Probe:
    """What the engine can say about a query without running it (see `QueryEngine.probe`)."""

    etag: str | None
    catalog_seq: int  # the state the tag and answer are for
    answer: Answer | None  # the cached answer, if there is one
    quick: bool  # its last run took less than QUICK_S: not worth a thread


@dataclass
class _Known:
    """A statement's answer shape at one catalog state, and how its last run went."""

    shape: encode.Shape
    small: bool = False  # its answer fits SMALL_ROWS (learnt from a run)
    last_s: float = 1.0  # engine time of its last JSON run
    # Parsed once: executing a parsed statement skips ~0.1 ms of a ~0.4 ms small query.
    parsed: dict[tuple[int, bool] | None, duckdb.Statement] = field(default_factory=dict)

    def statement(self, max_rows: int | None = None, *, exact: bool = False) -> duckdb.Statement:
        """The statement alone (no max_rows), or its JSON-rows wrapper, parsed."""
        key = None if max_rows is None else (max_rows, exact)
        parsed = self.parsed.get(key)
        if parsed is None:
            sql = (
                self.shape.statement
                if key is None
                else self.shape.json_rows_sql(max_rows, exact=exact)
            )
            if len(self.parsed) >= 8:  # a few max_rows values at most, in practice
                self.parsed.clear()
            parsed = self.parsed[key] = duckdb.extract_statements(sql)[0]
        return parsed


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
        result_cache_bytes: int = 0,
    ) -> None:
        self.timeout_s = timeout_s
        self.cache_bytes = cache_bytes
        self.results = results.ResultCache(result_cache_bytes)
        self._datasets_dir = Path(object_root).resolve() / "datasets"
        # Extensions must never be fetched or loaded behind the user's back: off from the start.
        config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        if threads:
            config["threads"] = int(threads)
        self._con = duckdb.connect(":memory:", config=config)
        self._con.execute("CREATE SCHEMA _lakehoused")
        self._con.execute(f"CREATE MACRO {SEQ_MACRO}() AS 0")
        lock_down(self._con, self._datasets_dir, memory_limit)
        self._gen = 0  # odd while sync swaps the views
        self._state = _State(0, {})
        self._views: dict[str, _Definition] = {}  # each dataset as the engine holds it now
        self._synced: dict[str, ViewSpec] = {}  # the datasets of the last sync
        self._pinned: dict[str, ViewSpec] = {}  # past versions ("name@3"): kept across syncs
        self._sync_lock = threading.Lock()  # one catalog change at a time
        self._cursor_lock = threading.Lock()  # the parent connection is not thread-safe
        self._idle: list[duckdb.DuckDBPyConnection] = []  # cursors between queries
        self._reads: dict[str, results.Reads] = {}
        self._shadow = results.Shadow()
        self._known: dict[tuple[str, int], _Known] = {}
        self._etags: dict[tuple, str] = {}
        self.running = 0  # queries holding a cursor now
        self.cancelled = 0  # queries interrupted because their client went away

    # -- the catalog ---------------------------------------------------------------------

    @property
    def catalog_seq(self) -> int:
        """The seq of the catalog state the views show now."""
        return self._state.seq

    def sync(self, views: Mapping[str, ViewSpec], seq: int) -> None:
        """Make the datasets exactly `views` and record `seq`, in one DuckDB transaction.

        A query on another cursor sees either the old set or the new one, never a mix, and
        reports the seq that goes with what it saw. Unchanged datasets are left alone.

        Datasets that fit the memory cache (smallest first, `cache_bytes` of estimated
        memory) are loaded into DuckDB tables named after them: a point lookup or a LIMIT
        then costs a scan of memory, not a Parquet decode, and no view to bind (a view costs
        ~0.15 ms a query here). Others are views over their objects.
        """
        with self._sync_lock:
            self._sync(views, seq)

    def _sync(self, views: Mapping[str, ViewSpec], seq: int) -> None:
        self._synced = dict(views)
        views = {**views, **self._pinned}
        cached = _fits_cache(views, self.cache_bytes)
        wanted = {name: _definition(name, spec, name in cached) for name, spec in views.items()}
        contents = {
            name: results.content_id([(c.name, c.type) for c in spec.columns], spec.paths)
            for name, spec in views.items()
        }
        self._shadow.sync({n: [(c.name, c.type) for c in v.columns] for n, v in views.items()})
        changed = {n: d for n, d in wanted.items() if self._views.get(n) != d}
        loads = sorted(d.copy for d in changed.values() if d.copy)
        # Copies load before the swap, while queries run on, under names no query uses.
        self._transaction([(n, d.create) for n, d in sorted(changed.items()) if d.copy], undo=loads)
        statements = [
            (name, f"DROP {self._views[name].kind} {ident(name)}")
            for name in sorted(self._views.keys() - wanted.keys())
        ]
        for name, definition in sorted(changed.items()):
            if name in self._views:  # queries running keep their snapshot of the old one
                statements.append((name, f"DROP {self._views[name].kind} {ident(name)}"))
            if definition.copy:
                sql = f"ALTER TABLE {ident(definition.copy)} RENAME TO {ident(name)}"
                statements.append((name, sql))
            else:
                statements.append((name, definition.create))
        # A macro, not a table: a query reads it as a constant, in its own snapshot.
        statements.append(("", f"CREATE OR REPLACE MACRO {SEQ_MACRO}() AS {int(seq)}"))
        self._gen += 1  # odd: queries starting now cannot trust _state
        try:
            self._transaction(statements, undo=loads)
            self._state = _State(seq, contents)
        finally:
            self._gen += 1
        self._views = wanted

    def views(self) -> set[str]:
        """The names a query can read now (datasets, and the past versions added)."""
        return set(self._views)

    def add(self, pinned: Mapping[str, ViewSpec]) -> None:
        """Add views of past versions (`name@N`), which stay across syncs: their data never
        changes. The oldest go beyond PINNED_VIEWS."""
        with self._sync_lock:
            self._pinned.update(pinned)
            while len(self._pinned) > PINNED_VIEWS:
                del self._pinned[next(iter(self._pinned))]
            self._sync(self._synced, self._state.seq)

    def _transaction(self, statements: list[tuple[str, str]], undo: list[str]) -> None:
        """Run (dataset, SQL) pairs in one transaction; on failure drop the tables in `undo`."""
        if not statements:
            return
        cur = self._cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            for name, sql in statements:
                try:
                    cur.execute(sql)
                except duckdb.Error as e:
                    raise StoreError(f"refresh view {name}: {e}") from e
            cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
            for table in undo:  # copies loaded for a swap that did not happen
                with contextlib.suppress(duckdb.Error):
                    cur.execute(f"DROP TABLE IF EXISTS {ident(table)}")
            raise
        finally:
            cur.close()

    # -- cursors ---------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            return self._con.cursor()

    def _take_cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            self.running += 1
            if self._idle:
                return self._idle.pop()
            return self._con.cursor()

    def _return_cursor(self, cur: duckdb.DuckDBPyConnection, *, reusable: bool) -> None:
        with self._cursor_lock:
            self.running -= 1
            if reusable and len(self._idle) < _POOL_SIZE:
                self._idle.append(cur)
                return
        cur.close()

    # -- what a statement reads ------------------------------------------------------------

    def _reads_of(self, statement: str) -> results.Reads:
        reads = self._reads.get(statement)
        seq = self._state.seq
        if reads is None or (reads.failed_at is not None and reads.failed_at != seq):
            try:
                reads = self._shadow.analyse(statement, seq)
            except duckdb.Error:
                reads = results.Reads(frozenset(), frozenset(), False, seq)
            _remember(self._reads, statement, reads)
        return reads

    def _key(self, statement: str, fmt: str, max_rows: int, state: _State) -> tuple | None:
        reads = self._reads.get(statement)
        if reads is None:
            return None
        return results.cache_key(
            statement, fmt, max_rows if fmt == "json" else None, reads, state.contents
        )

    def _etag(self, key: tuple | None) -> str | None:
        if key is None:
            return None
        tag = self._etags.get(key)
        if tag is None:
            tag = results.etag(key)
            _remember(self._etags, key, tag)
        return tag

    # -- answers ----------------------------------------------------------------------------

    def probe(self, sql: str, fmt: str, max_rows: int) -> Probe | None:
        """What is known of this query without running it: its ETag, its cached answer, and
        whether it is quick. Never blocks on a query (the event loop may call it); None when
        the statement is new to the engine and `answer` must look at it first."""
        started = perf_counter()
        statement = checked_statement(sql)
        reads = self._reads.get(statement)
        state = self._state
        if reads is None or (reads.failed_at is not None and reads.failed_at != state.seq):
            return None
        key = self._key(statement, fmt, max_rows, state)
        answer = self._kept(key, fmt, state, started)
        known = self._known.get((statement, state.seq))
        quick = fmt == "json" and known is not None and known.last_s < QUICK_S
        return Probe(self._etag(key), state.seq, answer, quick)

    def answer(
        self,
        sql: str,
        fmt: str,
        max_rows: int,
        *,
        cancel: Cancel | None = None,
        timeout_s: float | None = None,
    ) -> Answer | Stream:
        """The answer of `sql` in `fmt`: whole for json (cut at `max_rows`), a Stream for the
        others. A cacheable answer comes from the result cache when it is there, and goes
        into it (a stream once it ended, if it fits)."""
        started = perf_counter()
        statement = checked_statement(sql)
        self._reads_of(statement)
        state = self._state
        key = self._key(statement, fmt, max_rows, state)
        keep = key is not None and self.results.max_bytes > 0
        kept = self._kept(key, fmt, state, started)
        if kept is not None:
            return kept
        if fmt == "json":
            prefix, seq = self._json(statement, max_rows, cancel, timeout_s)
            if seq != state.seq:  # a sync ran meanwhile: the key is not this answer's
                key, keep = None, False
            if keep:
                self.results.put(key, prefix)
            body = encode.document(prefix, seq, perf_counter() - started)
            return Answer(body, seq, self._etag(key), "miss" if keep else "bypass")
        if fmt not in FORMATS:
            raise QueryError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        session, reader, known = self._open(statement, fmt, cancel, timeout_s)
        if session.seq != state.seq:
            key, keep = None, False
        stream = Stream(iter(()), session, self._etag(key), "miss" if keep else "bypass")
        stream._chunks = _chunks(
            self, session, _tallied(reader, stream), known.shape, fmt, key if keep else None
        )
        return stream

    def _kept(self, key: tuple | None, fmt: str, state: _State, started: float) -> Answer | None:
        """The answer the result cache keeps under `key`, as of `state`."""
        if key is None or not self.results.max_bytes:
            return None
        kept = self.results.get(key)
        if kept is None:
            return None
        if fmt == "json":  # kept without its catalog seq and time, which are this request's
            kept = encode.document(kept, state.seq, perf_counter() - started)
        return Answer(kept, state.seq, self._etag(key), "hit")

    def execute_json(
        self, sql: str, max_rows: int, *, timeout_s: float | None = None
    ) -> JsonAnswer:
        """The answer of `sql` as one JSON document, cut at `max_rows` with `"truncated": true`
        (`{"columns", "rows", "row_count", "truncated", "catalog_seq", "elapsed_ms"}`)."""
        answer = self.answer(sql, "json", max_rows, timeout_s=timeout_s)
        assert isinstance(answer, Answer)
        return JsonAnswer(answer.body, answer.catalog_seq)

    def execute(
        self, sql: str, *, timeout_s: float | None = None, cancel: Cancel | None = None
    ) -> QueryResult:
        """Check `sql` is one SELECT, then start it on its own cursor and return its rows as
        an Arrow stream.

        The time limit covers the whole life of the result, streaming included: the deadline
        interrupts the cursor, and the query (or the next read) raises QueryTimeout.
        """
        statement = checked_statement(sql)
        session, source, known = self._open(statement, "arrow", cancel, timeout_s)

        def batches() -> Iterator[pa.RecordBatch]:
            finished = False
            try:
                yield from source
                finished = True
            except (duckdb.Error, pa.ArrowException, OSError) as e:
                raise session.translate(e) from e
            finally:
                session.release(finished=finished)

        reader = pa.RecordBatchReader.from_batches(source.schema, batches())
        return QueryResult(
            known.shape.columns,
            reader,
            session.seq,
            session.started,
            _release=lambda: session.release(finished=False),
        )

    def _json(
        self, statement: str, max_rows: int, cancel: Cancel | None, timeout_s: float | None
    ) -> tuple[bytes, int]:
        """The JSON document up to its catalog seq, and that seq."""
        session, prefix, known = self._at_one_state(
            statement, cancel, timeout_s, lambda s, k: _json_rows(s, k, max_rows), keep=False
        )
        known.last_s = perf_counter() - session.started
        return prefix, session.seq

    def _open(
        self, statement: str, fmt: str, cancel: Cancel | None, timeout_s: float | None
    ) -> tuple[Session, pa.RecordBatchReader, _Known]:
        """Start a streamed answer; the session is released by whoever reads the stream."""

        def start(session: Session, known: _Known) -> pa.RecordBatchReader:
            shape = known.shape
            sql = {"arrow": statement, "ndjson": shape.ndjson_sql(), "csv": shape.csv_sql()}[fmt]
            # A relation streams; cursor.execute() would materialise the whole answer.
            return session.cur.sql(sql).to_arrow_reader(BATCH_ROWS)

        return self._at_one_state(statement, cancel, timeout_s, start, keep=True)

    def _at_one_state(
        self,
        statement: str,
        cancel: Cancel | None,
        timeout_s: float | None,
        work: Callable[[Session, _Known], T],
        *,
        keep: bool,
    ) -> tuple[Session, T, _Known]:
        """`work` on a new session that knows which catalog state it sees (the seqlock, or a
        transaction when a sync overlaps); the session is released after, unless `keep`."""
        gen, state = self._gen, self._state
        transaction = bool(gen & 1)
        while True:
            session = Session(self, statement, timeout_s, cancel, transaction=transaction)
            try:
                session.seq = session.begin() if transaction else state.seq
                known = self._shape(session)
                session.check()
                value = work(session, known)
            except BaseException as e:
                session.release(finished=False)
                if isinstance(e, duckdb.Error | pa.ArrowException):
                    raise session.translate(e) from e
                raise
            if not keep:
                session.release(finished=True)
            if transaction or self._gen == gen:
                return session, value, known
            if keep:
                session.release(finished=False)
            transaction = True  # a sync overlapped: once more, in a transaction

    def _shape(self, session: Session) -> _Known:
        key = (session.statement, session.seq)
        known = self._known.get(key)
        if known is None:
            relation = session.cur.sql(session.statement)
            shape = encode.Shape.of(session.statement, relation.columns, relation.types)
            known = _Known(shape)
            _remember(self._known, key, known)
        return known

    def close(self) -> None:
        """Close the database; results still streaming fail from here on."""
        with self._cursor_lock:
            idle, self._idle = self._idle, []
        for cur in idle:
            cur.close()
        self._con.close()
        self._shadow.close()


def _json_rows(session: Session, known: _Known, max_rows: int) -> bytes:
    """The JSON document up to its catalog seq, from one of two encoders of one form."""
    shape, cur = known.shape, session.cur
    if shape.python and known.small and known.last_s < DIRECT_S:
        # Seen before, small and plain: the statement alone, rows encoded here.
        cur.execute(known.statement())  # streams: only the rows fetched are computed
        rows = cur.fetchmany(min(max_rows, SMALL_ROWS) + 1)
        cur.abort()
        if len(rows) <= SMALL_ROWS or len(rows) > max_rows:
            truncated = len(rows) > max_rows
            text = encode.python_rows(shape, rows[:max_rows])
            if text is not None:
                return encode.json_prefix(shape.head, [text], min(len(rows), max_rows), truncated)
        else:
            known.small = False
    table = cur.execute(known.statement(max_rows)).to_arrow_table()
    if shape.floats and not pc.all(table.column(1)).as_py():
        # Rare: a double is NaN or infinite, which JSON lacks. Again, spelt out.
        table = cur.execute(known.statement(max_rows, exact=True)).to_arrow_table()
    count = table.num_rows
    known.small = count <= SMALL_ROWS
    rows = encode.json_rows(table.column(0), max_rows)
    return encode.json_prefix(shape.head, rows, min(count, max_rows), count > max_rows)


def _tallied(reader: pa.RecordBatchReader, stream: Stream) -> pa.RecordBatchReader:
    """`reader`, counting the rows it gives into `stream.rows`."""

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            stream.rows += batch.num_rows
            yield batch

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def _chunks(
    engine: QueryEngine,
    session: Session,
    reader: pa.RecordBatchReader,
    shape: encode.Shape,
    fmt: str,
    key: tuple | None,
) -> Iterator[bytes]:
    """The encoded chunks of a streamed answer; kept in the result cache if it ends and fits."""
    if fmt == "ndjson":
        source = encode.ndjson_chunks(reader)
    elif fmt == "csv":
        source = encode.csv_chunks(reader, [c["name"] for c in shape.columns])
    else:
        source = encode.arrow_chunks(reader)
    kept: list[bytes] | None = [] if key is not None else None
    size, limit = 0, engine.results.max_entry
    finished = False
    try:
        for chunk in source:
            if kept is not None:
                size += len(chunk)
                if size <= limit:
                    kept.append(chunk)
                else:
                    kept = None
            yield chunk
        finished = True
    except (duckdb.Error, pa.ArrowException, OSError) as e:
        raise session.translate(e) from e
    finally:
        session.release(finished=finished)
    if kept is not None and key is not None:
        engine.results.put(key, b"".join(kept))


def _remember(memory: dict, key: str | tuple, value: object) -> None:
    statement = key if isinstance(key, str) else key[0]
    if len(statement) > REMEMBERED_TEXT:
        return  # learnt again each time: bounded memory matters more for such statements
    if len(memory) >= _REMEMBERED:
        memory.clear()  # crude but bounded; these are cheap to learn again
    memory[key] = value


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


@dataclass(frozen=True)
class _Definition:
    """How a dataset appears in the engine: a view over its objects, or a table holding
    them (loaded as `copy`, then renamed to the dataset's name)."""

    kind: str  # "VIEW" or "TABLE"
    create: str  # the SQL creating the view, or loading the copy
    copy: str | None = None  # the copy's name until the swap renames it


def _definition(name: str, spec: ViewSpec, cached: bool) -> _Definition:
    """A dataset's definition: its columns over its objects, in memory if `cached`."""
    # union_by_name: an older part lacking a newer column reads it as NULL.
    columns = ", ".join(ident(c.name) for c in spec.columns)
    # Absolute already (the object cache root is); resolve() would cost a syscall a part.
    paths = ", ".join(literal(os.path.abspath(p)) for p in spec.paths)
    source = f"SELECT {columns} FROM read_parquet([{paths}], union_by_name = true)"
    if not spec.paths:
        # No part left (the last one retracted): its columns, typed, and no row. read_parquet
        # of no file is an error, which would fail every view's swap.
        typed = ", ".join(f"CAST(NULL AS {c.type}) AS {ident(c.name)}" for c in spec.columns)
        source = f"SELECT {typed} WHERE false"
    if not cached:
        return _Definition("VIEW", f"CREATE OR REPLACE VIEW {ident(name)} AS {source}")
    # Named after its content: equal definitions are equal, so an unchanged dataset is
    # left alone, and a name with "@" is never a dataset's.
    copy = f"{name}@{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    return _Definition("TABLE", f"CREATE TABLE {ident(copy)} AS {source}", copy)
