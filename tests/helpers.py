"""Helpers shared by the query-side tests (not fixtures: plain functions)."""

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
