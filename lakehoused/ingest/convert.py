"""CSV to Parquet in one read of the file, with our own type rules.

1. reader.py streams the file once: the strict check and pyarrow's parser see the same
   bytes, and every run of records comes out as an all-VARCHAR Arrow table;
2. each table is classified (types.classify_array: cheap vectorised tests first, leftovers
   one by one) and appended to a spill: in memory while it is small, else an uncompressed
   Arrow IPC file beside the target, read back with plain reads (not mmap, so the resident
   memory stays flat however large the file);
3. once every value has been seen, the column types are planned (types.plan_columns) and
   the spill is cast and written as Parquet in row groups of ~122,880 rows.

A value is never lost or altered: `12.5` is never rounded into an integer column, the zeros
of `007` are never dropped, a late `N/A` never becomes NULL. The conversion is a pure
function of the file and its arguments: it reads `source`, writes `target` (and
`rejects_target`), and returns plain, picklable data.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from lakehoused import faults
from lakehoused.ingest import parquet, types
from lakehoused.ingest.dialect import CsvFormat
from lakehoused.ingest.reader import CsvReader
from lakehoused.ingest.strict import BadRecord
from lakehoused.schema import Column

READ_SHARE = 0.6  # of the progress: the read; the rest is the Parquet write
# The rejected records of on_bad_rows = "quarantine", as stored in <dataset>__rejected_rows.
REJECTED_ROWS_COLUMNS = (
    Column("line", "BIGINT", nullable=False),
    Column("record", "VARCHAR", nullable=False),
    Column("reason", "VARCHAR", nullable=False),
)
REJECTED_ROWS_SUFFIX = "__rejected_rows"

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Conversion:
    """What a conversion produced: plain data for the event that records it."""

    columns: list[Column]
    rows: int
    dialect: dict = field(default_factory=dict)  # the dialect used, sniffed or set
    rejected_rows: int = 0  # records kept aside by on_bad_rows = "quarantine"
    rejects: Path | None = None  # the Parquet file holding them, if there are any
    # Per column, the OR of its values' classes (types.py): the evidence for its type, kept
    # so a later file that needs a wider type can be told exactly which one.
    classes: dict[str, int] = field(default_factory=dict)


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
    rejects_target: Path | None = None,
) -> Conversion:
    """Convert the CSV file `source` into the Parquet file `target` (overwritten).

    `existing` is the dataset's current schema, if it has one: types it holds are kept.
    With `fmt.on_bad_rows == "quarantine"`, records that break the grammar or have the
    wrong number of fields are written to `rejects_target` instead (line, record, reason).
    Raises RejectedFile, naming the line, column or byte, when the file cannot be ingested.
    """
    fmt = replace(fmt, dataset=dataset)
    hints = dict(hints or {})
    report = progress or (lambda _: None)
    spill = _Spill(target.with_name(target.name + ".spill.tmp"), _spill_limit(fmt))
    rejects = _Rejects(rejects_target) if fmt.on_bad_rows == "quarantine" else None
    output: parquet.ParquetOutput | None = None
    try:
        with CsvReader(source, fmt, [c.name for c in existing or ()]) as reader:
            names = reader.names
            classes = dict.fromkeys(names, types.EMPTY)

            def plan() -> parquet.Plan:
                return types.plan_columns(
                    names,
                    classes,
                    hints=hints,
                    existing=existing,
                    on_schema_change=on_schema_change,
                    dataset=dataset,
                    mode=mode,
                    existing_classes=existing_classes,
                )

            def classify(group: pa.Table) -> None:
                for name, column in zip(names, group.columns, strict=True):
                    # Text is final: nothing but VARCHAR holds it, whatever comes next.
                    if not classes[name] & types.TEXT:
                        classes[name] |= types.classify_array(column, classes[name])

            for table, bad in reader.tables():
                if bad:
                    if rejects is None:
                        raise AssertionError("bad records outside quarantine")
                    rejects.write(bad)
                if table is None:
                    continue
                spill.append(table)
                if output is None:
                    output = parquet.ParquetOutput(
                        target,
                        parquet.group_rows_for(table, fmt.memory_bytes // 8),
                        parquet.dictionary_columns(table),
                    )
                for group in output.take(table):
                    classify(group)
                    output.write(group, plan())
                report(READ_SHARE * reader.progress())
            dialect = reader.dialect.to_json()
        rest = output.rest() if output is not None else None
        if rest is not None:
            classify(rest)
        planned = plan()
        faults.point("converter_dies", source.name)
        faults.point("converter_fails", source.name)
        if output is None:
            columns = parquet.write_empty(target, planned)
        elif parquet.same_plans(output.plans, planned):
            if rest is not None:
                output.write(rest, planned)
            columns = output.finish(planned)
        else:
            output.abort()
            columns = parquet.rewrite(
                spill.tables(),
                target,
                planned,
                output.group_rows,
                output.dictionary,
                lambda rows: report(READ_SHARE + (1 - READ_SHARE) * rows / max(spill.rows, 1)),
            )
        rejected = rejects.close() if rejects is not None else 0
    except BaseException:
        if output is not None:
            output.abort()
        if rejects is not None:
            rejects.abort()
        raise
    finally:
        spill.close()
    report(1.0)
    return Conversion(
        columns=columns,
        rows=spill.rows,
        dialect=dialect,
        rejected_rows=rejected,
        rejects=rejects_target if rejected else None,
        classes={name: classes[name] for name, _ in planned},
    )


def _spill_limit(fmt: CsvFormat) -> int:
    """Bytes of VARCHAR rows held in memory before the spill moves to disk."""
    return fmt.memory_bytes // 8


class _Spill:
    """The file's rows as VARCHAR, in order: in memory up to `limit` bytes, else on disk."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path, self.limit = path, limit
        self.held: list[pa.Table] = []
        self.bytes = self.rows = 0
        self._writer: ipc.RecordBatchFileWriter | None = None
        self._sink: pa.NativeFile | None = None
        self._lock: int | None = None

    def append(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        self.bytes += table.nbytes
        if self._writer is None and self.bytes <= self.limit:
            self.held.append(table)
            return
        if self._writer is None:
            # Locked like the store's temp files, so no cleaner takes it while it is in use.
            self._lock = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = ipc.new_file(self._sink, table.schema)
            for held in self.held:
                self._writer.write_table(held)
            self.held = []
        self._writer.write_table(table)

    def tables(self) -> Iterator[pa.Table | pa.RecordBatch]:
        """Every table or batch appended, in order."""
        if self._writer is None:
            yield from self.held
            return
        self._writer.close()
        self._writer = None
        assert self._sink is not None
        self._sink.close()
        # Plain reads: a memory map would count the whole spill as resident memory.
        with pa.OSFile(str(self.path), "rb") as source:
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)

    def close(self) -> None:
        """Drop the spill."""
        if self._writer is not None:
            self._writer.close()
        if self._sink is not None:
            self._sink.close()
        self.held = []
        if self._lock is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None


class _Rejects:
    """The Parquet file of rejected records, written as they are found."""

    SCHEMA = pa.schema(
        [
            pa.field(c.name, types.ARROW_TYPES[c.type], nullable=c.nullable)
            for c in REJECTED_ROWS_COLUMNS
        ]
    )

    def __init__(self, path: Path | None) -> None:
        if path is None:
            raise ValueError('on_bad_rows = "quarantine" needs a rejects_target')
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None

    def write(self, bad: list[BadRecord]) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.SCHEMA, store_schema=False)
        table = pa.table(
            {
                "line": [b.line for b in bad],
                "record": [b.text for b in bad],
                "reason": [b.reason for b in bad],
            },
            schema=self.SCHEMA,
        )
        self._writer.write_table(table)
        self.rows += len(bad)

    def close(self) -> int:
        if self._writer is not None:
            self._writer.close()
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.path.unlink(missing_ok=True)
