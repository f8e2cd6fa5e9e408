"""CSV to Parquet through DuckDB, with our own type rules.

Three reads of the file, all by DuckDB's parallel CSV reader with one fixed dialect, so
every pass sees exactly the same values:

1. a sample of the first rows, to set aside columns that are text already (most text
   columns are: nothing can make them narrower, so the full pass need not look at them);
2. one pass over the remaining columns as VARCHAR, OR-ing each value's class (types.py);
3. `COPY (SELECT … FROM read_csv(… explicit types …)) TO temp.parquet`, streamed.

Passes 2 and 3 together cost less than DuckDB's own full-file sniffing (`sample_size=-1`),
and unlike it they never round `12.5` into an integer column. DuckDB only says *that* a
file is malformed; csvfile.diagnose then finds *where*.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from lakehoused import faults
from lakehoused.errors import RejectedFile
from lakehoused.ingest import types
from lakehoused.ingest.csvfile import CsvFormat, diagnose, read_header
from lakehoused.schema import Column

SAMPLE_ROWS = 2048
ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size: large enough to scan fast
MAX_LINE_BYTES = 8 << 20  # one CSV record; more than DuckDB's 2 MB default, for long free text
# (DuckDB sizes its decoding buffers from it: 16 MB already exhausts the converter budget)
# Bounded memory whatever the file size: DuckDB streams the COPY within this budget.
CONVERTER_MEMORY = "256MB"

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Conversion:
    """What a conversion produced: the Parquet file's columns and row count."""

    columns: list[Column]
    rows: int


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


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": 2, "memory_limit": CONVERTER_MEMORY})
    con.execute("SET preserve_insertion_order = true")  # rows keep the file's order
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    return con


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


def _classes(
    con: duckdb.DuckDBPyConnection,
    source: Path,
    fmt: CsvFormat,
    header: Sequence[str],
    must_check: set[str],
    run: _ProgressPoller,
) -> dict[str, int]:
    """Per column, the OR of its values' classes (types.py); text-in-sample columns skip pass 2."""
    every_varchar = dict.fromkeys(header, "VARCHAR")
    source_sql = _read_csv_sql(source, fmt, every_varchar)
    sample_sql = f"(SELECT * FROM {source_sql} LIMIT {SAMPLE_ROWS})"
    sample = con.execute(
        types.classes_query(dict.fromkeys(header, "number"), sample_sql)
    ).fetchone()
    classes = {name: int(bits or 0) for name, bits in zip(header, sample, strict=True)}
    candidates = {
        c: types.family_of(classes[c])
        for c in header
        if c in must_check or not classes[c] & types.TEXT
    }
    if candidates:
        row = run.run(0.0, 0.3, types.classes_query(candidates, source_sql))[0]
        classes.update((c, int(bits or 0)) for c, bits in zip(candidates, row, strict=True))
    return classes


def _duckdb_reason(error: duckdb.Error) -> RejectedFile:
    """A fallback message when the exact reader finds nothing: DuckDB's first lines."""
    text = str(error)
    line = re.search(r"on Line: (\d+)", text)
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    detail = next(
        (s for s in lines[1:] if not s.startswith("Original Line")), lines[0] if lines else text
    )
    if "Maximum line size" in text:
        detail = f"a record is longer than {MAX_LINE_BYTES >> 20} MiB"
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
    progress: Progress | None = None,
) -> Conversion:
    """Convert the CSV file `source` into the Parquet file `target` (overwritten).

    `existing` is the dataset's current schema, if it has one: types it holds are kept.
    Raises RejectedFile, naming the line, column or byte, when the file cannot be ingested.
    """
    header = read_header(source, fmt)
    hints = dict(hints or {})
    con = _connect()
    run = _ProgressPoller(con, progress)
    try:
        must_check = set(hints) | {c.name for c in existing or () if c.type != "VARCHAR"}
        classes = _classes(con, source, fmt, header, must_check, run)
        planned = types.plan_columns(
            header,
            classes,
            hints=hints,
            existing=existing,
            on_schema_change=on_schema_change,
            dataset=dataset,
        )
        faults.point("converter_dies", source.name)
        select = ", ".join(types.quote_identifier(name) for name, _ in planned)
        source_sql = _read_csv_sql(source, fmt, dict.fromkeys(header, "VARCHAR") | dict(planned))
        run.run(
            0.3,
            1.0,
            f"COPY (SELECT {select} FROM {source_sql}) TO {_sql_string(str(target))} "
            f"(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE {ROW_GROUP_ROWS}, "
            "USE_TMP_FILE false)",
        )
    except duckdb.Error as e:
        raise diagnose(source, fmt, expected_fields=len(header)) or _duckdb_reason(e) from e
    finally:
        con.close()
    return _describe_parquet(target, planned)


def _describe_parquet(target: Path, planned: Sequence[tuple[str, str]]) -> Conversion:
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
    return Conversion(columns=columns, rows=meta.num_rows)
