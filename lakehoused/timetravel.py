"""Time travel: a query that sees the catalog as it was, whole (`as_of`) or per dataset.

Two ways to ask, both answered from the same catalog tables (every version stays readable
until retention expires it):

- `as_of = SEQ` (`POST /sql`, `lakehoused sql --as-of`): every dataset exactly as it was right
  after event SEQ. Answered by an engine of its own holding that state's views; the few most
  recently asked states are kept.
- `"name@N"` in the SQL: version N of one dataset, beside the current ones (`SELECT … FROM
  "sales@3"`). The view is added to the engine the query runs on, and kept.

Data at one past state never changes, so such an answer never changes either: it carries
an ETag, and `Cache-Control: immutable`. A version whose objects retention may have removed
answers 410 Gone, saying which version and why.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

import duckdb

from lakehoused.errors import BadRequest, LakehousedError, UnknownDataset
from lakehoused.lakehouse import Lakehouse
from lakehoused.query import QueryEngine, ViewSpec

PINNED = re.compile(r"^([a-z_][a-z0-9_]{0,62})@([1-9][0-9]*)$")
"""A table name that asks for one version of a dataset: `sales@3`."""
KEPT_STATES = 4  # past states whose engines are kept, most recently asked first


class Gone(LakehousedError):
    """The version a query reads was expired by retention; its objects may be gone."""

    status = 410
    code = "gone"


def pinned_names(sql: str) -> set[str]:
    """The `name@N` tables a statement reads (none when it does not even parse)."""
    try:
        names = duckdb.get_table_names(sql)
    except duckdb.Error:
        return set()
    return {name for name in names if PINNED.match(name)}


def _expired_reason(name: str, version: int, expired_seq: int) -> str:
    return (
        f"version {version} of {name} was expired by retention at seq {expired_seq}; "
        "its objects may be gone (see `lakehoused history " + name + "`)"
    )


def pinned_specs(lakehouse: Lakehouse, names: Iterable[str]) -> dict[str, ViewSpec]:
    """The view of each `name@N`: that version's schema and objects.

    UnknownDataset when there is no such version, Gone when retention expired it.
    """
    specs = {}
    for pinned in sorted(names):
        match = PINNED.match(pinned)
        if match is None:
            continue
        name, version = match.group(1), int(match.group(2))
        found = lakehouse.catalog.at_version(name, version)
        if found is None or found[0].dropped:
            raise UnknownDataset(
                f"no version {version} of dataset {name!r}: "
                f"`lakehoused history {name}` lists its versions"
            )
        info, parts = found
        if info.expired_seq is not None:
            raise Gone(_expired_reason(name, version, info.expired_seq))
        specs[pinned] = lakehouse.view_spec(info.schema, parts, info.bytes)
    return specs


def state_specs(lakehouse: Lakehouse, seq: int) -> tuple[dict[str, ViewSpec], dict[str, str]]:
    """Every dataset's view right after event `seq`, and why each expired one is gone."""
    found = lakehouse.catalog.as_of(seq)
    if found is None:
        now = lakehouse.catalog.position()
        raise BadRequest(f"as_of: the log has no event {seq} yet (it is at seq {now})")
    specs, gone = {}, {}
    for name, version, parts in found:
        if version.expired_seq is not None:
            # No view: its objects may be gone; a query that reads it gets 410 and why.
            gone[name] = _expired_reason(name, version.version, version.expired_seq)
        else:
            specs[name] = lakehouse.view_spec(version.schema, parts, version.bytes)
    return specs, gone


def refuse_gone(sql: str, gone: dict[str, str]) -> None:
    """Gone (410) when the statement reads a dataset whose version there has expired."""
    if not gone:
        return
    try:
        names = {n.lower() for n in duckdb.get_table_names(sql)}
    except duckdb.Error:
        names = set(gone)  # cannot tell what it reads: assume the worst
    for name in sorted(names & gone.keys()):
        raise Gone(gone[name])


class PastStates:
    """Query engines at past catalog states, for `as_of`; the most recently asked are kept."""

    def __init__(self, lakehouse: Lakehouse, keep: int = KEPT_STATES) -> None:
        self.lakehouse = lakehouse
        self.keep = keep
        self._engines: OrderedDict[int, tuple[QueryEngine, dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def engine(self, seq: int, sql: str) -> QueryEngine:
        """The engine holding the catalog as it was after `seq`, ready for `sql`.

        Gone when `sql` reads a dataset whose version at `seq` retention expired.
        """
        if seq < 0:
            raise BadRequest(f"as_of: must be a seq >= 0; got {seq}")
        with self._lock:
            kept = self._engines.get(seq)
            if kept is None:
                specs, gone = state_specs(self.lakehouse, seq)
                # Past states share one more server.memory_limit between them, not one each.
                engine = self.lakehouse.new_engine(specs, seq, memory_cache=False, share=self.keep)
                kept = (engine, gone)
                self._engines[seq] = kept
                self._evict()
            self._engines.move_to_end(seq)
            engine, gone = kept
            refuse_gone(sql, gone)
            pins = pinned_names(sql)
            if pins:
                add_pins(engine, self.lakehouse, pins)
            return engine

    def _evict(self) -> None:
        """Close the least recently asked engines beyond `keep`, but none a query still
        runs on (it would fail): those go at a later eviction."""
        for seq in list(self._engines):
            if len(self._engines) <= self.keep:
                return
            engine, _ = self._engines[seq]
            if engine.running == 0:
                del self._engines[seq]
                engine.close()

    def close(self) -> None:
        """Close every kept engine."""
        with self._lock:
            for engine, _ in self._engines.values():
                engine.close()
            self._engines.clear()


def add_pins(engine: QueryEngine, lakehouse: Lakehouse, names: set[str]) -> None:
    """Add the `name@N` views a query needs to an engine that lacks them."""
    missing = names - engine.views()
    if missing:
        engine.add(pinned_specs(lakehouse, missing))
