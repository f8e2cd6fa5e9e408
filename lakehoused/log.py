"""The append-only, hash-chained event log: the single source of truth (DESIGN §4).

One SQLite file holds the `events` table and, beside it, the tables of a projection (the
catalog). Appending an event and applying it to the projection are one `BEGIN IMMEDIATE`
transaction, so the two can never disagree. The table defends itself: triggers refuse any
UPDATE, DELETE, overwrite, gap or broken link, even from a raw sqlite3 connection.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from lakehoused import faults
from lakehoused.errors import DuplicateEvent, LogBusy, LogError

# The prev_hash of the first event: there is nothing before it to link to.
ZERO_HASH = "0" * 64

# The schema version this code writes; PRAGMA user_version carries it in the file.
SCHEMA_VERSION = 1

# Events are read in pages so folding a million of them never holds them all in memory.
_PAGE = 1000

_COLUMNS = "seq, id, type, dataset, at, data, prev_hash, hash"

# Triggers that make the table append-only in the database itself. Recursive triggers are
# off by default, so `INSERT OR REPLACE` deletes without firing the DELETE trigger: the
# BEFORE INSERT guard on an existing seq/id is what stops it (and an UPSERT, too). It is
# created last because SQLite fires the newest trigger first, so a rewrite is reported as one.
_TRIGGERS = {
    "events_no_update": """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    "events_no_delete": """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
    "events_no_gap": """
        CREATE TRIGGER events_no_gap BEFORE INSERT ON events
        WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM events)
        BEGIN SELECT RAISE(ABORT, 'events: seq must follow the last seq without a gap'); END""",
    "events_chained": f"""
        CREATE TRIGGER events_chained BEFORE INSERT ON events
        WHEN NEW.prev_hash IS NOT coalesce(
            (SELECT hash FROM events ORDER BY seq DESC LIMIT 1), '{ZERO_HASH}')
        BEGIN SELECT RAISE(ABORT, 'events: prev_hash must be the hash of the last event'); END""",
    "events_no_overwrite": """
        CREATE TRIGGER events_no_overwrite BEFORE INSERT ON events
        WHEN EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq OR id = NEW.id)
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
}


_R = TypeVar("_R")


def _reading(method: Callable[..., _R]) -> Callable[..., _R]:
    """Translate a driver error during a read into the error tree (never a bare 500)."""

    @functools.wraps(method)
    def wrapper(self: EventLog, *args: Any, **kwargs: Any) -> _R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            if _is_busy(e):
                raise LogBusy(f"read {self.path}: {e}") from e
            raise LogError(f"read {self.path}: {e}") from e

    return wrapper


@contextmanager
def read_snapshot(conn: sqlite3.Connection, where: str) -> Iterator[sqlite3.Connection]:
    """One read transaction on `conn`: every read inside sees one state of the database.

    Nested use on the same connection joins the snapshot already open.
    """
    if conn.in_transaction:
        yield conn
        return
    try:
        conn.execute("BEGIN")
        yield conn
    except sqlite3.Error as e:
        raise LogError(f"read {where}: {e}") from e
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def _is_busy(e: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection (it passes; retry later)."""
    return "locked" in str(e) or "busy" in str(e)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant spaces: the one text that gets hashed."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def new_event_id() -> str:
    """A fresh random event id (uuid4 hex)."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """The current UTC time in RFC 3339 with microseconds, e.g. 2026-11-22T04:35:00.123456Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    seq: int, id: str, type: str, dataset: str | None, at: str, data_text: str, prev_hash: str
) -> str:
    """sha256 over the canonical JSON of every column but the hash itself."""
    row = [seq, id, type, dataset, at, data_text, prev_hash]
    return hashlib.sha256(canonical_json(row).encode()).hexdigest()


@dataclass(frozen=True)
class Event:
    """An event not yet in the log; `type` is its past-tense wire name."""

    type: str
    data: dict
    dataset: str | None = None
    # Callers pass a deterministic id where a retry must not record the event twice.
    id: str = field(default_factory=new_event_id)


@dataclass(frozen=True)
class StoredEvent:
    """An event in the log, with its position and its link in the hash chain."""

    seq: int
    id: str
    type: str
    dataset: str | None
    at: str
    data: dict
    prev_hash: str
    hash: str

    def to_json(self) -> dict:
        """The JSON Lines / HTTP form."""
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "dataset": self.dataset,
            "at": self.at,
            "data": self.data,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_json(cls, d: dict) -> StoredEvent:
        """The event as read back from an export line or an HTTP answer."""
        return cls(
            seq=int(d["seq"]),
            id=d["id"],
            type=d["type"],
            dataset=d.get("dataset"),
            at=d["at"],
            data=d["data"],
            prev_hash=d["prev_hash"],
            hash=d["hash"],
        )

    @classmethod
    def _from_row(cls, row: tuple) -> StoredEvent:
        seq, id, type, dataset, at, data_text, prev_hash, hash = row
        return cls(seq, id, type, dataset, at, json.loads(data_text), prev_hash, hash)


def read_export(fh: TextIO) -> Iterator[StoredEvent]:
    """The events of a JSON Lines export, in file order; a bad line is a LogError naming it."""
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            yield StoredEvent.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as e:
            raise LogError(f"read export: line {lineno}: not an event ({e!r})") from e


class Projection(Protocol):
    """A view folded from the log, kept in the log's database and stored with its position."""

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create its tables if they are missing."""

    def position(self, conn: sqlite3.Connection) -> int:
        """The seq of the last event applied (0 for none)."""

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        """Fold one event and record its seq as the position; may raise VersionConflict."""

    def reset(self, conn: sqlite3.Connection) -> None:
        """Drop and recreate its tables, back at position 0."""

    def bind(self, reader: Callable[[], sqlite3.Connection]) -> None:
        """Read through `reader` (a per-thread read-only connection) from now on."""


# --- schema versions and migrations -----------------------------------------------------


def _last_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]


def _user_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _expect_version(conn: sqlite3.Connection, version: int) -> None:
    # Each migration re-checks its from-version so one can never run twice or out of order.
    found = _user_version(conn)
    if found != version:
        raise LogError(
            f"migration {version}->{version + 1}: the log is at schema version {found}, "
            f"not {version}; refusing to migrate"
        )


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """Create the events table, its indexes and the append-only triggers."""
    _expect_version(conn, 0)
    conn.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            dataset TEXT,
            at TEXT NOT NULL,
            data TEXT NOT NULL CHECK (json_valid(data)),
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        ) STRICT"""
    )
    # last(type=..., dataset=...) walks these backwards instead of scanning the log.
    conn.execute("CREATE INDEX events_type ON events (type, seq)")
    conn.execute("CREATE INDEX events_dataset ON events (dataset, seq)")
    for sql in _TRIGGERS.values():
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")


Migration = Callable[[sqlite3.Connection], None]

# from_version -> the step that brings the log to from_version + 1.
MIGRATIONS: dict[int, Migration] = {0: _migrate_0_to_1}


def migrate(
    conn: sqlite3.Connection,
    migrations: dict[int, Migration] | None = None,
    latest: int = SCHEMA_VERSION,
) -> int:
    """Bring the log's schema up to `latest`, one guarded step at a time, in one transaction.

    Returns the schema version reached. A log newer than `latest` is refused untouched.
    """
    steps = MIGRATIONS if migrations is None else migrations
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _user_version(conn)
        if version > latest:
            raise LogError(
                f"the log is at schema version {version}, written by a newer lakehoused "
                f"(this one knows up to {latest}); upgrade lakehoused to open it"
            )
        while version < latest:
            if version not in steps:
                raise LogError(f"no migration from log schema version {version}")
            steps[version](conn)
            version = _user_version(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


# --- the log ----------------------------------------------------------------------------


class EventLog:
    """The append-only event log in one SQLite file, with an optional projection beside it.

    Several processes may write the same file (the daemon and a one-shot ingest); every write
    is a `BEGIN IMMEDIATE` transaction and waits up to 10 s for the other writer.
    """

    def __init__(
        self,
        db_path: Path,
        projection: Projection | None = None,
        *,
        read_only: bool = False,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(db_path)
        self.read_only = read_only
        self.busy_timeout_s = busy_timeout_s
        self._projection = projection
        # Guards the one writing connection; reads use per-thread connections of their own,
        # so they never queue behind an fsynced append (WAL lets them read meanwhile).
        self.lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        if read_only:
            self._conn = self._open_read_only()
        else:
            self._conn = self._open_writer()
        if projection is None:
            return
        try:
            if not read_only:
                with self._transaction("set up the projection"):
                    projection.setup(self._conn)
            bind = getattr(projection, "bind", None)
            if bind is not None:
                bind(self.reader)
            if not read_only:
                self.catch_up()
        except BaseException:
            self.close()
            raise

    def _open_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_s,
            )
        except sqlite3.Error as e:
            raise LogError(f"open log {self.path}: {e}") from e
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            migrate(conn)
        except (sqlite3.Error, LogError) as e:
            conn.close()
            raise LogError(f"open log {self.path}: {e}") from e
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise LogError(
                f"no lakehouse at {self.path.parent}: {self.path.name} does not exist there; "
                "check state.path in the config (nothing has been ingested with it yet)"
            )
        conn = self._connect_reader()
        try:
            version = _user_version(conn)
        except sqlite3.Error as e:
            conn.close()
            raise LogError(f"open log {self.path} read-only: {e}") from e
        if version != SCHEMA_VERSION:
            conn.close()
            raise LogError(
                f"the log {self.path} is at schema version {version}, this lakehoused reads "
                f"{SCHEMA_VERSION}; run a writing command (lakehoused run) to migrate it"
            )
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout_s,
            )
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as e:
            raise LogError(f"open log {self.path} for reading: {e}") from e
        return conn

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (reads never wait for the writer)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect_reader()
            with self._readers_lock:  # not self.lock: a write in progress must not stall it
                self._readers.append(conn)
        return conn

    def snapshot(self) -> AbstractContextManager[sqlite3.Connection]:
        """A read transaction on this thread's reader: every read inside sees one state."""
        return read_snapshot(self.reader(), str(self.path))

    @property
    def connection(self) -> sqlite3.Connection:
        """The log's writing connection (hold `lock` while using it)."""
        return self._conn

    def close(self) -> None:
        """Close every connection; the log cannot be used afterwards."""
        with self.lock, self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
            self._conn.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, what: str) -> Iterator[None]:
        """One BEGIN IMMEDIATE ... COMMIT; anything raised rolls it all back."""
        with self.lock:
            if self.read_only:
                raise LogError(f"{what}: the log {self.path} was opened read-only")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                if _is_busy(e):
                    raise LogBusy(
                        f"{what} in {self.path}: another writer held the log for over "
                        f"{self.busy_timeout_s:g} s"
                    ) from e
                raise LogError(f"{what} in {self.path}: {e}") from e
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException as e:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    if _is_busy(e):
                        raise LogBusy(f"{what} in {self.path}: {e}") from e
                    raise LogError(f"{what} in {self.path}: {e}") from e
                raise

    # --- writing ---

    def append(self, event: Event) -> StoredEvent:
        """Append one event and apply it to the projection, in one transaction.

        Raises DuplicateEvent if an event with this id is already in the log; whatever the
        projection raises (VersionConflict) rolls the append back, leaving nothing written.
        """
        return self.append_all([event])[0]

    def append_all(self, events: list[Event]) -> list[StoredEvent]:
        """Append events in order and apply each to the projection, all in one transaction:
        all of them are in the log, or none (as `append`, for each)."""
        try:
            texts = [canonical_json(event.data) for event in events]
        except (TypeError, ValueError) as e:
            raise LogError(f"append {events[0].type}: data is not plain JSON: {e}") from e
        stored_all: list[StoredEvent] = []
        with self._transaction(f"append {', '.join(e.type for e in events)}"):
            # Another process may have appended without folding; the projection must see
            # every earlier event before these.
            self._fold_pending()
            for event, data_text in zip(events, texts, strict=True):
                found = self._conn.execute(
                    "SELECT seq FROM events WHERE id = ?", (event.id,)
                ).fetchone()
                if found:
                    raise DuplicateEvent(
                        f"event {event.id} is already in the log at seq {found[0]}"
                    )
                faults.point("log_fails", event.type)
                seq, prev_hash = self._tail()
                at = utc_now()
                stored = StoredEvent(
                    seq=seq + 1,
                    id=event.id,
                    type=event.type,
                    dataset=event.dataset,
                    at=at,
                    data=json.loads(data_text),
                    prev_hash=prev_hash,
                    hash=event_hash(
                        seq + 1, event.id, event.type, event.dataset, at, data_text, prev_hash
                    ),
                )
                self._insert(stored, data_text)
                if self._projection is not None:
                    self._projection.apply(self._conn, stored)
                stored_all.append(stored)
        return stored_all

    def import_events(self, events: Iterable[StoredEvent]) -> int:
        """Insert exported events as they are into an EMPTY log, then fold them; one transaction.

        Every hash and link is checked first; a mismatch is a LogError naming the seq, and
        nothing is written. Returns the number of events imported.
        """
        count = 0
        with self._transaction("import events"):
            present = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
            if present:
                raise LogError(
                    f"import into {self.path}: the log already holds {present} events; "
                    "import only into an empty state directory"
                )
            prev_seq, prev_hash = 0, ZERO_HASH
            for ev in events:
                try:
                    data_text = canonical_json(ev.data)
                except (TypeError, ValueError) as e:
                    raise LogError(f"import: seq {ev.seq}: data is not plain JSON: {e}") from e
                if ev.seq != prev_seq + 1:
                    raise LogError(
                        f"import: seq {ev.seq}: expected seq {prev_seq + 1} (gap or disorder)"
                    )
                if ev.prev_hash != prev_hash:
                    raise LogError(f"import: seq {ev.seq}: prev_hash does not match seq {prev_seq}")
                computed = event_hash(
                    ev.seq, ev.id, ev.type, ev.dataset, ev.at, data_text, ev.prev_hash
                )
                if computed != ev.hash:
                    raise LogError(
                        f"import: seq {ev.seq}: hash does not match the event; "
                        "the export was altered or corrupted"
                    )
                self._insert(ev, data_text)
                prev_seq, prev_hash = ev.seq, ev.hash
                count += 1
            if self._projection is not None:
                # Stale projection tables may outlive a deleted log; start the fold from zero.
                self._projection.reset(self._conn)
                self._fold_pending()
        return count

    def catch_up(self) -> int:
        """Apply what other processes appended since; returns the projection's new position."""
        if self._projection is None:
            return self.last_seq
        # One snapshot for both reads: read apart, another writer's append in between made
        # the projection look ahead of the log.
        with self.snapshot() as conn:
            last = _last_seq(conn)
            position = self._projection.position(conn)
        if position > last:
            raise LogError(
                f"{self.path}: the projection is at seq {position} but the log ends at "
                f"seq {last}; run `lakehoused replay`"
            )
        if position == last or self.read_only:
            return position
        with self._transaction("catch up the projection"):
            self._fold_pending()
            return self._projection.position(self._conn)

    def replay(self) -> None:
        """Rebuild the projection from the whole log, in one transaction."""
        if self._projection is None:
            raise LogError("replay: this log has no projection to rebuild")
        with self._transaction("replay"):
            self._projection.reset(self._conn)
            self._fold_pending()

    def _fold_pending(self) -> None:
        # Called inside a transaction: fold every event after the projection's position.
        if self._projection is None:
            return
        for ev in self._events_after(self._projection.position(self._conn)):
            self._projection.apply(self._conn, ev)

    def _insert(self, ev: StoredEvent, data_text: str) -> None:
        self._conn.execute(
            f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.seq, ev.id, ev.type, ev.dataset, ev.at, data_text, ev.prev_hash, ev.hash),
        )

    def _tail(self) -> tuple[int, str]:
        row = self._conn.execute(
            "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else (0, ZERO_HASH)

    # --- reading ---

    def _events_after(self, after: int, upto: int | None = None) -> Iterator[StoredEvent]:
        # Paging by seq keeps memory bounded and never leaves a cursor open across writes.
        while True:
            with self.lock:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after, upto if upto is not None else 2**63 - 1, _PAGE),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield StoredEvent._from_row(row)
            after = rows[-1][0]

    def events(self, after: int = 0) -> Iterator[StoredEvent]:
        """Every event after `after`, in order, read in pages on this thread's reader (inside
        a `snapshot()`, all of them from that one state)."""
        while True:
            rows = self._page(after)
            if not rows:
                return
            for row in rows:
                yield StoredEvent._from_row(row)
            after = rows[-1][0]

    @_reading
    def _page(self, after: int) -> list[tuple]:
        return (
            self.reader()
            .execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, _PAGE)
            )
            .fetchall()
        )

    @_reading
    def read(
        self, after: int = 0, limit: int | None = None, type: str | None = None
    ) -> list[StoredEvent]:
        """Events with seq > `after`, in order, optionally of one type, at most `limit`."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ?"
        args: list[Any] = [after]
        if type is not None:
            sql += " AND type = ?"
            args.append(type)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [StoredEvent._from_row(r) for r in self.reader().execute(sql, args)]

    @_reading
    def last(self, type: str | None = None, dataset: str | None = None) -> StoredEvent | None:
        """The latest event, optionally of one type and/or about one dataset."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE 1"
        args: list[Any] = []
        if type is not None:
            sql += " AND type = ?"
            args.append(type)
        if dataset is not None:
            sql += " AND dataset = ?"
            args.append(dataset)
        row = self.reader().execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        return StoredEvent._from_row(row) if row else None

    @_reading
    def find(self, event_id: str) -> StoredEvent | None:
        """The event with this id, if the log holds it (what a retried append collided with)."""
        row = (
            self.reader()
            .execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,))
            .fetchone()
        )
        return StoredEvent._from_row(row) if row else None

    @property
    @_reading
    def last_seq(self) -> int:
        """The seq of the last event in the log (0 when empty)."""
        return _last_seq(self.reader())

    @_reading
    def export(self, fh: TextIO) -> int:
        """Write the log as JSON Lines, one StoredEvent.to_json per line; returns the count.

        The export ends at the last seq when it started, so it is one consistent prefix.
        """
        count = 0
        for ev in self._events_after(0, upto=self.last_seq):
            fh.write(json.dumps(ev.to_json(), sort_keys=True, ensure_ascii=False) + "\n")
            count += 1
        return count

    @_reading
    def verify_chain(self) -> list[str]:
        """Problems with the log: gaps in seq, rows whose hash or link is wrong, missing guards.

        Returns [] when the log is sound; each row problem names its seq.
        """
        problems: list[str] = []
        have = {
            r[0]
            for r in self.reader().execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
            )
        }
        problems += [
            f"trigger {name} is missing: the events table is no longer append-only"
            for name in _TRIGGERS
            if name not in have
        ]
        expected, prev_hash = 1, ZERO_HASH
        after = 0
        while True:
            # Raw rows: the hash covers the stored data text, not a re-encoding of it.
            rows = self._page(after)
            if not rows:
                break
            for seq, id, type, dataset, at, data_text, row_prev, row_hash in rows:
                if seq != expected:
                    problems.append(f"seq {seq}: gap, seq {expected}..{seq - 1} missing")
                if row_prev != prev_hash:
                    problems.append(
                        f"seq {seq}: prev_hash does not match the previous event's hash"
                    )
                if event_hash(seq, id, type, dataset, at, data_text, row_prev) != row_hash:
                    problems.append(f"seq {seq}: hash does not match its row")
                # Link to the stored hash so one altered row is reported once, not onwards.
                expected, prev_hash = seq + 1, row_hash
            after = rows[-1][0]
        return problems


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ZERO_HASH",
    "Event",
    "EventLog",
    "Projection",
    "StoredEvent",
    "canonical_json",
    "event_hash",
    "migrate",
    "new_event_id",
    "read_export",
    "utc_now",
]
