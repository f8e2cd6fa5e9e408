"""Ingest: CSV reading, type inference, schema fingerprint and Parquet writing (DESIGN §3)."""

from lakehoused.ingest.convert import Conversion, convert
from lakehoused.ingest.csvfile import CsvFormat, read_header

__all__ = ["Conversion", "CsvFormat", "convert", "read_header"]
