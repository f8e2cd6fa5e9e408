"""The result cache: answers kept by what they depend on, so that none is ever stale.

Data at one catalog state is immutable, so an answer is a function of the statement, the
format and its options, and the content of the datasets the statement reads. The key holds
exactly that (a dataset's content is the sha256 of its objects, from their content
addresses), so an answer stays valid until one of those datasets changes, whatever else the
catalog does. A statement is cacheable only when DuckDB's function catalogue says every
function it calls is CONSISTENT (no `random()`, `now()`, `uuid()`, …), it samples nothing
and reads nothing but dataset views and its own CTEs.
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
    deterministic: bool  # only CONSISTENT functions, no sample, no table function


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


def analyse(con: duckdb.DuckDBPyConnection, statement: str) -> Reads:
    """The tables a statement reads and whether its answer is a function of them."""
    (text,) = con.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()[0]
    tree = json.loads(text)
    if tree.get("error"):
        return Reads(frozenset(), frozenset(), False)
    names, ctes, calls, ok = _walk(tree["statements"])
    deterministic = ok and all(_consistent(con, schema, name) for schema, name in calls)
    return Reads(frozenset(names), frozenset(ctes), deterministic)


def _walk(tree: object) -> tuple[set[str], set[str], set[tuple[str, str]], bool]:
    """(table names, CTE names, (schema, function) calls, nothing else unsafe)."""
    names: set[str] = set()
    ctes: set[str] = set()
    calls: set[tuple[str, str]] = set()
    ok = True
    for node in _dicts(tree):
        if node.get("class") in ("FUNCTION", "WINDOW"):
            if node.get("catalog"):
                ok = False
            calls.add((str(node.get("schema") or "").lower(), str(node["function_name"]).lower()))
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
                if node.get("catalog_name") or str(node.get("schema_name", "")).lower() not in (
                    "",
                    "main",
                ):
                    ok = False
                names.add(str(node["table_name"]).lower())
    return names, ctes, calls, ok


def _dicts(tree: object) -> Iterator[dict]:
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_CATALOGUE: dict[str, bool] | None = None
_CATALOGUE_LOCK = threading.Lock()


def _consistent(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    if schema not in _SCHEMAS:
        return False  # the engine's own macros (the catalog seq) change with the catalog
    return _catalogue(con).get(name, False)


def _catalogue(con: duckdb.DuckDBPyConnection) -> dict[str, bool]:
    """Built-in function name -> True when every overload is CONSISTENT.

    Read from duckdb_functions(): scalar, aggregate and window functions carry their
    stability; a built-in macro is consistent when everything its body calls is.
    """
    global _CATALOGUE
    with _CATALOGUE_LOCK:
        if _CATALOGUE is None:
            _CATALOGUE = _read_catalogue(con)
        return _CATALOGUE


def _read_catalogue(con: duckdb.DuckDBPyConnection) -> dict[str, bool]:
    rows = con.execute(
        "SELECT lower(function_name), function_type, stability, macro_definition "
        "FROM duckdb_functions() WHERE internal"
    ).fetchall()
    functions: dict[str, bool] = {}
    macros: dict[str, list[str | None]] = {}
    for name, kind, stability, definition in rows:
        if kind in ("scalar", "aggregate", "window"):
            functions[name] = functions.get(name, True) and stability == "CONSISTENT"
        elif kind == "macro":
            macros.setdefault(name, []).append(definition)
    verdict = dict(functions)
    # Every overload of a macro must be safe; a macro may call another: iterate to a fixpoint.
    bodies: dict[str, list[tuple[set[tuple[str, str]], bool]]] = {}
    for name, definitions in macros.items():
        bodies[name] = []
        for definition in definitions:
            if definition is None:
                bodies[name].append((set(), False))
                continue
            (text,) = con.execute(
                "SELECT json_serialize_sql(?)", ["SELECT " + definition]
            ).fetchall()[0]
            tree = json.loads(text)
            if tree.get("error"):
                bodies[name].append((set(), False))
                continue
            table_names, _, calls, ok = _walk(tree["statements"])
            bodies[name].append((calls, ok and not table_names))
    for name in macros:
        verdict[name] = False
    changed = True
    while changed:
        changed = False
        for name, overloads in bodies.items():
            safe = functions.get(name, True) and all(
                ok and all(schema in _SCHEMAS and verdict.get(f, False) for schema, f in calls)
                for calls, ok in overloads
            )
            if safe and not verdict[name]:
                verdict[name] = True
                changed = True
    return verdict


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
        cost = len(body) + ENTRY_OVERHEAD
        if cost > self.max_entry:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= len(old) + ENTRY_OVERHEAD
            while self._entries and self.used + cost > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.used -= len(evicted) + ENTRY_OVERHEAD
            self._entries[key] = body
            self.used += cost

    def resize(self, max_bytes: int) -> None:
        """A new budget; entries beyond it go, least recently used first."""
        with self._lock:
            self.max_bytes = max_bytes
            while self._entries and self.used > max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.used -= len(evicted) + ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._entries)
