"""CSV to Parquet through DuckDB, with our own type rules.

Three reads of the file, all by DuckDB's parallel CSV reader with one fixed dialect, so
every pass sees exactly the same values:

1. a sample of the first rows sets aside columns that are text already (most text columns
   are: nothing can make them narrower, so the full pass need not look at them);
2. one pass over the other columns as VARCHAR, OR-ing each value's class (types.py);
3. `COPY (SELECT … FROM read_csv(… explicit types …)) TO temp.parquet`, streamed.

Unlike DuckDB's own sniffing, this never rounds `12.5` into an integer column, never drops
the zeros of `007`, never turns a late `N/A` into NULL. DuckDB only says *that* a file is
malformed; csvfile.diagnose then finds *where*.

Why not one read, with casts checked in the COPY's SELECT? Measured with DuckDB 2.0: a COPY
whose SELECT casts several columns through CASE expressions loses the file's row order
(10 runs in 10), even with preserve_insertion_order; a COPY from typed read_csv columns
keeps it (0 in 10). Row order matters: it is the file's order, and the content address of
the Parquet bytes must not depend on thread timing.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from lakehoused import faults
from lakehoused.errors import RejectedFile
from lakehoused.ingest import types
from lakehoused.ingest.csvfile import CsvFormat, diagnose, read_header
from lakehoused.schema import Column

SAMPLE_ROWS = 2048
SMALL_FILE = 4 << 20  # bytes; below this, no sample: one class pass over every column
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size: large enough to scan fast
# One CSV record at most: DuckDB's default. It sizes its read buffers at 16 times this, so
# a larger limit breaks the converter's memory budget on large files (8 MB did, at 5M rows).
MAX_LINE_BYTES = 2 << 20
# Bounded memory whatever the file size: DuckDB streams the COPY within this budget.
CONVERTER_MEMORY = "256MB"

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Conversion:
    """What a conversion produced: the Parquet file's columns and row count."""

    columns: list[Column]
    rows: int
    # Per column, the OR of its values' classes (types.py): the evidence for its type, kept
    # so a later file that needs a wider type can be told exactly which one.
    classes: dict[str, int] = field(default_factory=dict)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _read_csv_sql(source: Path, fmt: CsvFormat, columns: Mapping[str, str]) -> str:
    """A read_csv call with every dialect option fixed: no sniffing, no guessing."""
    column_spec = (
        "{" + ", ".join(f"{_sql_string(n)}: {_sql_string(t)}" for n, t in columns.items()) + "}"
    )
    nulls = ", ".join(_sql_string(v) for v in ("", *fmt.null_values))
    return (
        f"read_csv({_sql_string(str(source))}, columns = {column_spec}, header = true, "
        f"auto_detect = false, delim = {_sql_string(fmt.delimiter)}, quote = '\"', "
        f"escape = '\"', strict_mode = true, nullstr = [{nulls}], "
        f"encoding = {_sql_string(fmt.encoding)}, "
        f"compression = {_sql_string(fmt.compression or 'none')}, "
        f"max_line_size = {MAX_LINE_BYTES})"
    )


_local = threading.local()


def _connect() -> duckdb.DuckDBPyConnection:
    """This thread's converter connection: opening one costs ~20 ms, a small file less."""
    con = getattr(_local, "con", None)
    if con is None:
        con = duckdb.connect(config={"threads": 2, "memory_limit": CONVERTER_MEMORY})
        con.execute("SET preserve_insertion_order = true")  # rows keep the file's order
        con.execute("SET enable_progress_bar = true")
        con.execute("SET enable_progress_bar_print = false")
        _local.con = con
    return con


def _discard_connection() -> None:
    """After a failure, start the next conversion on a fresh connection."""
    con = getattr(_local, "con", None)
    _local.con = None
    if con is not None:
        con.close()


class _ProgressPoller:
    """Reports DuckDB's progress of the running statement, mapped into [low, high]."""

    def __init__(self, con: duckdb.DuckDBPyConnection, report: Progress | None) -> None:
        self.con, self.report = con, report
        self.stop = threading.Event()

    def run(self, low: float, high: float, sql: str) -> list:
        if self.report is None:
            return self.con.execute(sql).fetchall()
        self.stop.clear()

        def poll() -> None:
            while not self.stop.wait(0.1):
                percent = self.con.query_progress()
                if percent >= 0:
                    self.report(low + (high - low) * min(percent, 100.0) / 100.0)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            return self.con.execute(sql).fetchall()
        finally:
            self.stop.set()
            thread.join()
            self.report(high)


def _sample_classes(
    con: duckdb.DuckDBPyConnection, source_sql: str, header: Sequence[str]
) -> dict[str, int]:
    """Per column, the OR of the classes of its first SAMPLE_ROWS values."""
    sample_sql = f"(SELECT * FROM {source_sql} LIMIT {SAMPLE_ROWS})"
    row = con.execute(types.classes_query(dict.fromkeys(header, "number"), sample_sql)).fetchone()
    return {name: int(bits or 0) for name, bits in zip(header, row, strict=True)}


def _file_classes(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    classes: dict[str, int],
    columns: Sequence[str],
    run: _ProgressPoller,
) -> dict[str, int]:
    """The full-file pass: the OR of every value's class, for `columns`."""
    families = {c: types.family_of(classes[c]) for c in columns}
    # Aggregates only: the order rows arrive in does not matter here, and not keeping it is
    # markedly faster.
    con.execute("SET preserve_insertion_order = false")
    try:
        (row,) = run.run(0.0, 0.3, types.classes_query(families, source_sql))
    finally:
        con.execute("SET preserve_insertion_order = true")
    return classes | {c: int(bits or 0) for c, bits in zip(columns, row, strict=True)}


def _duckdb_reason(error: duckdb.Error) -> RejectedFile:
    """A fallback message when the exact reader finds nothing: DuckDB's own words, trimmed."""
    text = str(error)
    line = re.search(r"on Line: (\d+)", text)
    if "Maximum line size" in text:
        detail = f"a record is longer than {MAX_LINE_BYTES >> 20} MiB"
    else:
        # The first line names the error class; the cause is the first sentence after the
        # echoed record, before DuckDB's "Possible solutions" advice.
        lines = [s.strip() for s in text.split("Possible")[0].splitlines() if s.strip()]
        causes = [s for s in lines[1:] if not s.startswith(("Original Line", "CSV Error"))]
        detail = causes[0] if causes else lines[0] if lines else text
    where = f"line {line.group(1)}: " if line else ""
    return RejectedFile(f"{where}{detail}", line=int(line.group(1)) if line else None)


def convert(
    source: Path,
    target: Path,
    fmt: CsvFormat,
    *,
    dataset: str,
    hints: Mapping[str, str] | None = None,
    existing: Sequence[Column] | None = None,
    on_schema_change: str = "reject",
    mode: str = "replace",
    existing_classes: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> Conversion:
    """Convert the CSV file `source` into the Parquet file `target` (overwritten).

    `existing` is the dataset's current schema, if it has one: types it holds are kept.
    Raises RejectedFile, naming the line, column or byte, when the file cannot be ingested.
    """
    header = read_header(source, fmt)
    hints = dict(hints or {})
    plan = functools.partial(
        types.plan_columns,
        header,
        hints=hints,
        existing=existing,
        on_schema_change=on_schema_change,
        dataset=dataset,
        mode=mode,
        existing_classes=existing_classes,
    )
    source_sql = _read_csv_sql(source, fmt, dict.fromkeys(header, "VARCHAR"))
    con = _connect()
    run = _ProgressPoller(con, progress)
    try:
        if source.stat().st_size <= SMALL_FILE:
            # One pass over every column costs less than a sample and a pass.
            classes, checked = dict.fromkeys(header, types.EMPTY), list(header)
        else:
            classes = _sample_classes(con, source_sql, header)
            # Columns with text in the sample are text whatever follows, unless a hint or
            # the dataset's type says otherwise: those are checked, with all not yet text.
            must_check = set(hints) | {c.name for c in existing or () if c.type != "VARCHAR"}
            checked = [c for c in header if c in must_check or not classes[c] & types.TEXT]
        if checked:
            classes = _file_classes(con, source_sql, classes, checked, run)
        planned = plan(classes)
        faults.point("converter_dies", source.name)
        faults.point("converter_fails", source.name)
        typed_sql = _read_csv_sql(source, fmt, dict.fromkeys(header, "VARCHAR") | dict(planned))
        select = ", ".join(types.quote_identifier(name) for name, _ in planned)
        run.run(
            0.3,
            1.0,
            f"COPY (SELECT {select} FROM {typed_sql}) TO {_sql_string(str(target))} "
            f"(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
            "USE_TMP_FILE false)",
        )
    except duckdb.OutOfMemoryException as e:
        _discard_connection()  # a failed statement may leave it in any state
        raise RejectedFile(
            f"the converter ran out of memory ({CONVERTER_MEMORY}) on this file: "
            f"{str(e).splitlines()[0]}"
        ) from e
    except duckdb.Error as e:
        _discard_connection()
        raise diagnose(source, fmt, expected_fields=len(header)) or _duckdb_reason(e) from e
    return _describe_parquet(target, planned, classes)


def _describe_parquet(
    target: Path, planned: Sequence[tuple[str, str]], classes: Mapping[str, int]
) -> Conversion:
    """Rows and per-column nullability, read from the Parquet footer's statistics."""
    meta = pq.ParquetFile(target).metadata
    nulls = [0] * len(planned)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for i in range(len(planned)):
            stats = group.column(i).statistics
            nulls[i] += stats.null_count if stats is not None and stats.has_null_count else 1
    columns = [
        Column(name, type_, nullable=nulls[i] > 0) for i, (name, type_) in enumerate(planned)
    ]
    seen = {name: int(classes.get(name, types.TEXT)) for name, _ in planned}
    return Conversion(columns=columns, rows=meta.num_rows, classes=seen)
