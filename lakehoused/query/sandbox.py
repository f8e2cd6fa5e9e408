"""What user SQL may do (DESIGN §6): one SELECT, on a connection locked down before use.

DuckDB's own guards stop reading files outside the object directory, extensions and
settings changes; they do not stop `COPY … TO` or `ATTACH` inside an allowed directory, nor
`EXPLAIN ANALYZE COPY`. The statement check here is what does.
"""

from __future__ import annotations

import functools
from pathlib import Path

import duckdb

from lakehoused.errors import ForbiddenQuery, QueryError


def lock_down(con: duckdb.DuckDBPyConnection, datasets_dir: Path, memory_limit: str) -> None:
    """Apply the sandbox's settings to a fresh connection, then lock its configuration."""
    # The order matters: allowed_directories cannot be set once external access is off,
    # and nothing can be set once the configuration is locked.
    settings = [
        f"SET memory_limit = {literal(memory_limit)}",
        # GLOBAL: a plain SET of these would only hold for this connection, not cursors.
        "SET GLOBAL python_enable_replacements = false",
        # Objects are immutable and content-addressed, so cached footers never go stale.
        "SET GLOBAL parquet_metadata_cache = true",
        # Answers must not depend on the host's zone: TIMESTAMPTZ values are shown in UTC.
        "SET GLOBAL TimeZone = 'UTC'",
        # No temp directory: a query that outgrows memory_limit fails instead of spilling.
        "SET temp_directory = ''",
        "SET allow_community_extensions = false",
        f"SET allowed_directories = [{literal(str(datasets_dir) + '/')}]",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ]
    for statement in settings:
        try:
            con.execute(statement)
        except duckdb.Error as e:
            raise QueryError(f"query engine setup: {statement}: {e}") from e


def check_statement(sql: str) -> str:
    """Accept exactly one statement of type SELECT; refuse anything else with ForbiddenQuery.

    Returns the statement alone, without a trailing semicolon, so it can be wrapped.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(str(e)) from e
    if not statements:
        raise QueryError("no SQL statement given; send one SELECT")
    kinds = [s.type.name for s in statements]
    if kinds != ["SELECT"]:
        found = kinds[0] if len(kinds) == 1 else f"{len(kinds)} statements ({', '.join(kinds)})"
        raise ForbiddenQuery(f"only one SELECT statement per request; got {found}")
    return statements[0].query.strip().rstrip(";").strip()


@functools.lru_cache(maxsize=4096)
def _statement_or_error(sql: str) -> tuple[str, type[QueryError] | None, str]:
    # Only strings are kept: an exception would keep its traceback's DuckDB objects alive.
    try:
        return check_statement(sql), None, ""
    except QueryError as e:
        return "", type(e), str(e)


# Statements longer than this are checked every time instead of remembered: what the engine
# remembers per statement is bounded by count, and this bounds it by size too.
REMEMBERED_TEXT = 16 << 10


def checked_statement(sql: str) -> str:
    """check_statement, remembered per text: parsing is a pure function of it."""
    if len(sql) > REMEMBERED_TEXT:
        return check_statement(sql)
    statement, error, message = _statement_or_error(sql)
    if error is not None:
        raise error(message)
    return statement


def query_error(e: BaseException) -> QueryError:
    """A DuckDB (or Arrow) error as the error the API reports."""
    if isinstance(e, QueryError):
        return e
    message = str(e)
    if isinstance(e, duckdb.PermissionException) or message.startswith("Permission Error"):
        return ForbiddenQuery(message)
    if "configuration has been locked" in message:
        # Some table functions (enable_logging) change settings: only the lock stops them.
        return ForbiddenQuery(message)
    if isinstance(e, duckdb.OutOfMemoryException) or message.startswith("Out of Memory Error"):
        # DuckDB's text ends with advice about temp directories that does not apply here.
        first = message.split("\n", 1)[0]
        return QueryError(f"{first}; the query needs more memory than server.memory_limit")
    return QueryError(message)


def ident(name: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
