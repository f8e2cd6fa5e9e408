"""Writing the Parquet object: typed row groups, written beside the reading.

Types are only known once every value has been seen, but most files keep the types their
first rows show. So row groups are cast and written while the file is still being read,
with the plan that the values seen so far give (a speculation); if the final plan turns
out different (say a late `N/A` turns a DOUBLE column into VARCHAR), everything is written
again from the spilled VARCHAR rows. Either way the bytes depend only on the file and the
arguments: the same plan, the same row groups, the same encodings.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakehoused.ingest import types
from lakehoused.schema import Column

ROW_GROUP_ROWS = 122_880  # DuckDB's own row group size: large enough to scan fast
# A column whose first rows repeat values this much is dictionary-encoded: smaller, and
# cheaper than letting the encoder try a dictionary on unique values and give up.
_DICTIONARY_RATIO = 0.5

Plan = list[tuple[str, str]]


def group_rows_for(sample: pa.Table, budget: int) -> int:
    """Rows per row group: ROW_GROUP_ROWS, unless rows are too wide for `budget` bytes."""
    row_bytes = max(sample.nbytes // max(sample.num_rows, 1), 1)
    return max(1, min(ROW_GROUP_ROWS, budget // row_bytes))


def dictionary_columns(sample: pa.Table) -> list[str]:
    """The columns worth a dictionary, judged on a sample of rows."""
    chosen = []
    for name, column in zip(sample.column_names, sample.columns, strict=True):
        distinct = pc.count_distinct(column).as_py()
        if distinct <= max(1, int(sample.num_rows * _DICTIONARY_RATIO)):
            chosen.append(name)
    return chosen


class ParquetOutput:
    """A Parquet file written row group by row group from VARCHAR tables, cast per plan."""

    def __init__(self, target: Path, group_rows: int, dictionary: list[str]) -> None:
        self.target, self.group_rows, self.dictionary = target, group_rows, dictionary
        self.plans: list[Plan] = []  # the plan of each group written
        self.rows = 0
        self.nulls: dict[str, int] = {}
        self._pending: list[pa.Table] = []
        self._have = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._failure: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def take(self, table: pa.Table) -> Iterator[pa.Table]:
        """Queue a table's rows; every full row group they complete, to be written."""
        self._pending.append(table)
        self._have += table.num_rows
        while self._have >= self.group_rows:
            yield self._cut(self.group_rows)

    def rest(self) -> pa.Table | None:
        """The rows queued that fill no whole row group (the last, shorter one)."""
        return self._cut(self._have) if self._have else None

    def write(self, group: pa.Table, plan: Plan) -> None:
        """Cast a row group per plan and hand it to the writing thread."""
        if self._failure:
            raise self._failure[0]
        schema = pa.schema([(name, types.ARROW_TYPES[type_]) for name, type_ in plan])
        typed = pa.table(
            [types.cast(group.column(name), type_) for name, type_ in plan], schema=schema
        )
        for name in typed.column_names:
            self.nulls[name] = self.nulls.get(name, 0) + typed.column(name).null_count
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(schema,), name="parquet-write", daemon=True
            )
            self._thread.start()
        self.plans.append(plan)
        self.rows += typed.num_rows
        self._queue.put(typed)

    def finish(self, plan: Plan) -> list[Column]:
        """Close the file; the columns written (with their nullability)."""
        if self._thread is None:
            return write_empty(self.target, plan)
        self._close()
        return [Column(name, type_, nullable=self.nulls.get(name, 0) > 0) for name, type_ in plan]

    def abort(self) -> None:
        """Stop writing (the file is left incomplete: the caller overwrites or drops it)."""
        self._pending = []
        self._close(raise_failure=False)

    def _cut(self, rows: int) -> pa.Table:
        joined = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        rest = joined.slice(rows)
        self._pending = [rest] if rest.num_rows else []
        self._have = rest.num_rows
        return joined.slice(0, rows)

    def _run(self, schema: pa.Schema) -> None:
        # The encoder releases the GIL: it runs beside the reading and the next casts.
        try:
            with pq.ParquetWriter(
                self.target,
                schema,
                compression="snappy",
                use_dictionary=sorted(set(self.dictionary) & set(schema.names)),
                store_schema=False,
                write_statistics=True,
            ) as writer:
                while (group := self._queue.get()) is not None:
                    if group.schema != schema:
                        raise RuntimeError("a row group with another plan reached the writer")
                    writer.write_table(group, row_group_size=self.group_rows)
        except BaseException as e:
            self._failure.append(e)
            while self._queue.get() is not None:
                pass

    def _close(self, *, raise_failure: bool = True) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._thread = None
        if self._failure and raise_failure:
            raise self._failure[0]


def write_empty(target: Path, plan: Plan) -> list[Column]:
    """A Parquet file with the plan's columns and no rows."""
    schema = pa.schema([(name, types.ARROW_TYPES[type_]) for name, type_ in plan])
    pq.write_table(schema.empty_table(), target, store_schema=False)
    return [Column(name, type_, nullable=False) for name, type_ in plan]


def rewrite(
    parts: Iterable[pa.Table | pa.RecordBatch],
    target: Path,
    plan: Plan,
    group_rows: int,
    dictionary: list[str],
    report: Callable[[int], None],
) -> list[Column]:
    """Write every part again with the final plan (the speculation was wrong)."""
    output = ParquetOutput(target, group_rows, dictionary)
    try:
        for part in _tables(parts):
            for group in output.take(part):
                output.write(group, plan)
                report(output.rows)
        if (rest := output.rest()) is not None:
            output.write(rest, plan)
        return output.finish(plan)
    except BaseException:
        output.abort()
        raise


def _tables(parts: Iterable[pa.Table | pa.RecordBatch]) -> Iterator[pa.Table]:
    for part in parts:
        yield part if isinstance(part, pa.Table) else pa.Table.from_batches([part])


def same_plans(plans: Sequence[Plan], final: Plan) -> bool:
    """Whether every row group written so far used the final plan."""
    return all(plan == final for plan in plans)
