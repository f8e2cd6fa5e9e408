"""Ingest: CSV reading, type inference, schema fingerprint and Parquet writing (DESIGN §3)."""

from lakehoused.ingest.convert import (
    REJECTED_ROWS_COLUMNS,
    REJECTED_ROWS_SUFFIX,
    Conversion,
    convert,
)
from lakehoused.ingest.dialect import CsvFormat, format_for

__all__ = [
    "REJECTED_ROWS_COLUMNS",
    "REJECTED_ROWS_SUFFIX",
    "Conversion",
    "CsvFormat",
    "convert",
    "format_for",
]
