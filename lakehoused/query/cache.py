"""The result cache: answers kept by what they depend on, so that none is ever stale.

Data at one catalog state is immutable, so an answer is a function of the statement, the
format and its options, and the content of the datasets the statement reads. The key holds
exactly that (a dataset's content is the sha256 of its objects, from their content
addresses), so an answer stays valid until one of those datasets changes, whatever else the
catalog does.

A statement is cacheable only when its answer is such a function: it reads nothing but
dataset views and its own CTEs (no table function, no system view, no file), samples
nothing, and every function DuckDB binds it to is stable by DuckDB's own function catalogue
(`duckdb_functions().stability`, read once): CONSISTENT, or CONSISTENT_WITHIN_QUERY and
given arguments. The latter are the functions that depend on the session's time zone,
calendar or settings (`date_trunc` of a TIMESTAMPTZ, `current_setting('threads')`), which
the engine locks at start; the argument-less ones read the clock or the transaction
(`now()`, `current_date`) and are never cached, nor is anything VOLATILE (`random()`,
`uuid()`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from lakehoused import __version__

_TABLE_REFS = {"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT"}
_SCHEMAS = {"", "main", "pg_catalog", "system"}
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}\.parquet$")
ENTRY_OVERHEAD = 256  # bytes charged per entry beside its body: key, tuple, list links


@dataclass(frozen=True)
class Reads:
    """What a statement depends on besides its own text."""

    names: frozenset[str]  # the tables it names (lower case)
    ctes: frozenset[str]  # the names its own WITH clauses define
    deterministic: bool  # stable functions only, no sample, no table function
    failed_at: int | None = None  # the catalog seq at which it could not be bound


def content_id(columns: object, paths: list[Path]) -> str:
    """A dataset's content: its columns and the objects it reads, by their sha256 where the
    file name gives it (content-addressed objects), else by path, size and mtime."""
    parts = []
    for path in paths:
        p = Path(path)
        if _SHA256_NAME.match(p.name):
            parts.append(p.name)
        else:
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    text = repr((columns, parts))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Shadow:
    """A second DuckDB database holding, for each dataset, an empty table of its columns.

    DuckDB cannot serialize the plan of a Parquet scan, so statements are bound here: the
    same names and types give the same functions. It binds and never runs user SQL, and
    its own external access is off and locked, so binding `read_csv('/etc/passwd')` fails.
    """

    def __init__(self) -> None:
        config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        self._con = duckdb.connect(":memory:", config=config)
        for setting in ("enable_external_access = false", "lock_configuration = true"):
            self._con.execute(f"SET {setting}")
        self._tables: dict[str, str] = {}
        self._lock = threading.Lock()

    def sync(self, tables: Mapping[str, list[tuple[str, str]]]) -> None:
        """Hold exactly these tables (name -> [(column, type)])."""
        wanted = {
            name: "CREATE OR REPLACE TABLE "
            + _ident(name)
            + " ("
            + ", ".join(f"{_ident(c)} {t}" for c, t in columns)
            + ")"
            for name, columns in tables.items()
        }
        with self._lock:
            for name in self._tables.keys() - wanted.keys():
                self._con.execute(f"DROP TABLE IF EXISTS {_ident(name)}")
            for name, sql in wanted.items():
                if self._tables.get(name) != sql:
                    self._con.execute(sql)
            self._tables = wanted

    def analyse(self, statement: str, seq: int) -> Reads:
        """`analyse` on this database, one statement at a time."""
        with self._lock:
            return analyse(self._con, statement, seq)

    def close(self) -> None:
        """Close the database."""
        self._con.close()


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def analyse(con: duckdb.DuckDBPyConnection, statement: str, seq: int) -> Reads:
    """The tables a statement reads and whether its answer is a function of them.

    The parse tree gives the tables and CTEs as written; the bound plan gives the functions
    as DuckDB resolved them (macros expanded, `current_date` seen as the call it is). A
    statement that cannot be bound now (an unknown table) is marked failed at `seq`.
    """
    tree = _json(con, "SELECT json_serialize_sql(?)", statement)
    if tree.get("error"):
        return Reads(frozenset(), frozenset(), False, seq)
    names, ctes, ok = _walk(tree["statements"])
    plan = _json(con, "SELECT json_serialize_plan(?, optimize := false)", statement)
    if plan.get("error"):
        return Reads(frozenset(names), frozenset(ctes), False, seq)
    catalogue = _catalogue(con)
    for node in _dicts(plan["plans"]):
        if "expression_class" in node and "qname" in node:
            name = str(node["qname"]["path"][-1]).lower()
            consistent, volatile = catalogue.get(name, (False, True))
            if not (consistent or (node.get("children") and not volatile)):
                ok = False
                break
    return Reads(frozenset(names), frozenset(ctes), ok)


def _json(con: duckdb.DuckDBPyConnection, sql: str, statement: str) -> dict:
    (text,) = con.execute(sql, [statement]).fetchall()[0]
    return json.loads(text)


def _walk(tree: object) -> tuple[set[str], set[str], bool]:
    """(table names, CTE names, nothing unsafe) from a parse tree."""
    names: set[str] = set()
    ctes: set[str] = set()
    ok = True
    for node in _dicts(tree):
        if node.get("class") in ("FUNCTION", "WINDOW"):
            # Only the system's functions: the engine's own macro (the catalog seq) is bound
            # to a constant that changes with the catalog.
            if node.get("catalog") or str(node.get("schema") or "").lower() not in _SCHEMAS:
                ok = False
        elif "class" in node:
            continue
        elif node.get("sample") is not None:
            ok = False  # USING SAMPLE / TABLESAMPLE draws a new sample each run
        elif "map" in node and isinstance(node["map"], list):
            ctes |= {str(entry["key"]).lower() for entry in node["map"] if "key" in entry}
        elif "alias" in node and "sample" in node and "modifiers" not in node:
            kind = node.get("type")
            if kind not in _TABLE_REFS or node.get("at_clause") is not None:
                ok = False  # a table function, SHOW/DESCRIBE, time travel: not ours to key
            elif kind == "BASE_TABLE":
                schema = str(node.get("schema_name", "")).lower()
                if node.get("catalog_name") or schema not in ("", "main"):
                    ok = False
                names.add(str(node["table_name"]).lower())
    return names, ctes, ok


def _dicts(tree: object) -> Iterator[dict]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_CATALOGUE: dict[str, tuple[bool, bool]] | None = None
_CATALOGUE_LOCK = threading.Lock()


def _catalogue(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[bool, bool]]:
    """Built-in function name -> (every overload CONSISTENT, some overload VOLATILE)."""
    global _CATALOGUE
    with _CATALOGUE_LOCK:
        if _CATALOGUE is None:
            rows = con.execute(
                "SELECT lower(function_name), bool_and(stability = 'CONSISTENT'), "
                "bool_or(stability = 'VOLATILE') FROM duckdb_functions() "
                "WHERE internal AND function_type IN ('scalar', 'aggregate', 'window') "
                "GROUP BY ALL"
            ).fetchall()
            _CATALOGUE = {name: (consistent, volatile) for name, consistent, volatile in rows}
            # error() is VOLATILE so that the optimizer never folds or moves it, not because
            # its outcome varies: it always raises, and errors are never kept. The planner
            # puts one in every scalar subquery ("more than one row"), which must not make
            # `(SELECT max(x) FROM t)` uncacheable.
            _CATALOGUE["error"] = (True, False)
        return _CATALOGUE


def cache_key(
    statement: str, fmt: str, max_rows: int | None, reads: Reads, contents: Mapping[str, str]
) -> tuple | None:
    """The key of an answer, or None when it is not a function of the key (not cacheable).

    Every name the statement reads must be a dataset at this catalog state or one of its
    own CTEs: anything else (a system view, a file path) has content the key cannot see. A
    name that is both is keyed as the dataset, as a CTE may shadow it in one scope only.
    """
    if not reads.deterministic:
        return None
    datasets = []
    for name in sorted(reads.names):
        content = contents.get(name)
        if content is None:
            if name in reads.ctes:
                continue
            return None
        datasets.append((name, content))
    return (statement, fmt, max_rows, tuple(datasets))


def etag(key: tuple) -> str:
    """A weak entity tag for an answer's key (weak: catalog_seq and elapsed_ms may differ
    between two bodies of one tag)."""
    digest = hashlib.blake2b(repr((__version__, key)).encode(), digest_size=16).hexdigest()
    return f'W/"{digest}"'


class ResultCache:
    """Answers by key, least recently used first out, within a budget of bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.used = 0
        self.max_bytes = max_bytes

    @property
    def max_entry(self) -> int:
        """The largest answer kept: a quarter of the budget, so one answer never empties it."""
        return self.max_bytes // 4

    def get(self, key: tuple) -> bytes | None:
        """The answer kept under `key`, now the most recently used."""
        with self._lock:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
            return body

    def put(self, key: tuple, body: bytes) -> None:
        """Keep `body` under `key` if it fits, evicting the least recently used."""
        cost = _cost(key, body)
        if cost > self.max_entry:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= _cost(key, old)
            while self._entries and self.used + cost > self.max_bytes:
                gone, evicted = self._entries.popitem(last=False)
                self.used -= _cost(gone, evicted)
            self._entries[key] = body
            self.used += cost

    def resize(self, max_bytes: int) -> None:
        """A new budget; entries beyond it go, least recently used first."""
        with self._lock:
            self.max_bytes = max_bytes
            while self._entries and self.used > max_bytes:
                gone, evicted = self._entries.popitem(last=False)
                self.used -= _cost(gone, evicted)

    def __len__(self) -> int:
        return len(self._entries)


def _cost(key: tuple, body: bytes) -> int:
    """What an entry holds: its body, its statement's text, and the rest of its key."""
    return len(body) + len(key[0]) + ENTRY_OVERHEAD
