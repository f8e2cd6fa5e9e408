"""Full-text search over the event log: a second projection, beside the catalog.

`EventSearch` keeps one row of searchable text per event (what `describe()` says, the file's
name, the details of a rejection) in `search_events`, indexed by SQLite FTS5 through
sqlite-utils' `enable_fts` (its triggers keep `search_events_fts` in step with that table,
never with the log's own `events` table, whose append-only triggers stay untouched). Like
the catalog it lives in the log's database, is folded in the same transaction as each
append, stores the seq it has reached, and is rebuilt from the log by `lakehoused replay`.

`Projections` folds several projections as one, so EventLog keeps taking a single one.
`find_events` is what `GET /events` reads: filters by type and dataset, a text search,
and paging either way along the log.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence

import sqlite_utils

from lakehoused import events
from lakehoused.errors import LogBusy, LogError
from lakehoused.log import EventLog, Projection, StoredEvent

_TABLE = "search_events"
_FTS = f"{_TABLE}_fts"
_COLUMNS = "e.seq, e.id, e.type, e.dataset, e.at, e.data, e.prev_hash, e.hash"


class EventSearch:
    """The search projection: each event's text, under an FTS5 index (implements Projection)."""

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create the tables and the index if missing (a log from before them starts at 0)."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if {"search_position", _TABLE, _FTS} <= tables:
            return
        self._drop(conn)  # half of it cannot be trusted to fold onto
        conn.execute(
            "CREATE TABLE search_position (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "seq INTEGER NOT NULL) STRICT"
        )
        conn.execute("INSERT INTO search_position (id, seq) VALUES (1, 0)")
        conn.execute(f"CREATE TABLE {_TABLE} (seq INTEGER PRIMARY KEY, file TEXT, text TEXT)")
        # Not recursive_triggers (that would change the log's own connection) nor plugins.
        db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        db[_TABLE].enable_fts(
            ["file", "text"], tokenize="unicode61 remove_diacritics 2", create_triggers=True
        )

    def position(self, conn: sqlite3.Connection) -> int:
        """The seq of the last event indexed (0 for none, or when the tables are not made yet:
        a read-only open of a log from before them)."""
        try:
            return conn.execute("SELECT seq FROM search_position WHERE id = 1").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        """Index one event's text and record its seq."""
        source = event.data.get("source")
        file = source.get("name") or source.get("uri") if isinstance(source, dict) else None
        conn.execute(
            f"INSERT INTO {_TABLE} (seq, file, text) VALUES (?, ?, ?)",
            (event.seq, file, searchable_text(event)),
        )
        conn.execute("UPDATE search_position SET seq = ? WHERE id = 1", (event.seq,))

    def reset(self, conn: sqlite3.Connection) -> None:
        """Drop and recreate the index, back at position 0."""
        self._drop(conn)
        self.setup(conn)

    def bind(self, reader: Callable[[], sqlite3.Connection]) -> None:
        """Reads go through `find_events`, on the log's readers; nothing to keep here."""

    def _drop(self, conn: sqlite3.Connection) -> None:
        # The FTS5 shadow tables go with their virtual table, the triggers with theirs.
        for table in (_FTS, _TABLE, "search_position"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def searchable_text(event: StoredEvent) -> str:
    """What a search looks in: the line a person reads, and a rejection's details."""
    text = events.describe(event)
    details = event.data.get("details")
    if isinstance(details, dict) and details:
        text += " " + " ".join(str(v) for v in details.values())
    return text


class Projections:
    """Several projections folded as one: each gets every event after its own position."""

    def __init__(self, *projections: Projection) -> None:
        self.members: Sequence[Projection] = projections

    def setup(self, conn: sqlite3.Connection) -> None:
        """Set each one up."""
        for p in self.members:
            p.setup(conn)

    def position(self, conn: sqlite3.Connection) -> int:
        """The position of the one furthest behind: the log folds onward from there."""
        return min(p.position(conn) for p in self.members)

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        """Fold the event into each one that has not seen it (one added later catches up)."""
        for p in self.members:
            if p.position(conn) < event.seq:
                p.apply(conn, event)

    def reset(self, conn: sqlite3.Connection) -> None:
        """Reset each one."""
        for p in self.members:
            p.reset(conn)

    def bind(self, reader: Callable[[], sqlite3.Connection]) -> None:
        """Bind each one that reads."""
        for p in self.members:
            bind = getattr(p, "bind", None)
            if bind is not None:
                bind(reader)


def fts_query(text: str) -> str:
    """A person's words as an FTS5 query: every word must match, each as a prefix.

    Each word is quoted, so no character of it is FTS syntax (`day1.csv`, `N/A`, `-`).
    """
    words = text.split()
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words)


def find_events(
    log: EventLog,
    *,
    after: int = 0,
    before: int | None = None,
    limit: int = 100,
    newest_first: bool = False,
    type: str | None = None,
    dataset: str | None = None,
    text: str | None = None,
) -> list[StoredEvent]:
    """Events with `after` < seq < `before`, of one type, about one dataset, whose text matches,
    oldest first (or newest first), at most `limit`."""
    sql = f"SELECT {_COLUMNS} FROM events e"
    where, args = ["e.seq > ?"], [after]
    query = fts_query(text or "")
    if query:
        sql += f" JOIN {_FTS} f ON f.rowid = e.seq"
        where.append(f"{_FTS} MATCH ?")
        args.append(query)
    if before is not None:
        where.append("e.seq < ?")
        args.append(before)
    if type is not None:
        where.append("e.type = ?")
        args.append(type)
    if dataset is not None:
        where.append("e.dataset = ?")
        args.append(dataset)
    sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY e.seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
    args.append(limit)
    try:
        rows = log.reader().execute(sql, args).fetchall()
    except sqlite3.Error as e:
        if "locked" in str(e) or "busy" in str(e):
            raise LogBusy(f"read {log.path}: {e}") from e
        raise LogError(f"search the events in {log.path}: {e}") from e
    return [
        StoredEvent(seq, id, type_, ds, at, json.loads(data), prev, h)
        for seq, id, type_, ds, at, data, prev, h in rows
    ]
