"""The query side: a sandboxed DuckDB engine over the datasets, and how answers are written.

`engine` runs queries (views, the result cache, answers), `session` is one query's cursor,
time limit and cancel handle, `encode` writes every DuckDB type in JSON, NDJSON and CSV,
`cache` keys answers by what they read, `sandbox` says what user SQL may do.
"""

from lakehoused.query.engine import (
    BATCH_ROWS,
    FORMATS,
    Answer,
    JsonAnswer,
    Probe,
    QueryEngine,
    QueryResult,
    Stream,
    ViewSpec,
)
from lakehoused.query.sandbox import check_statement
from lakehoused.query.session import Cancel

__all__ = [
    "BATCH_ROWS",
    "FORMATS",
    "Answer",
    "Cancel",
    "JsonAnswer",
    "Probe",
    "QueryEngine",
    "QueryResult",
    "Stream",
    "ViewSpec",
    "check_statement",
]
