"""Helpers shared by tests (not fixtures: plain functions)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_object(root: Path, dataset: str, table: pa.Table) -> Path:
    """Write `table` as a content-addressed object, the way the store lays them out."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    data = sink.getvalue().to_pybytes()
    path = root / "datasets" / dataset / f"{hashlib.sha256(data).hexdigest()}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def query(lh, sql: str) -> list[tuple]:
    """The rows of `sql` over a lakehouse's catalog as it is now, as tuples."""
    engine = lh.open_engine()
    try:
        table = engine.execute(sql).reader.read_all()
    finally:
        engine.close()
    return [tuple(row.values()) for row in table.to_pylist()]
