"""The catalog: a projection of the event log into datasets, versions and parts (DESIGN §4).

The catalog is never edited in place: it is `fold(events)` (folds.py), kept in the log's
own database and advanced in the same transaction as each append, with the seq it has
reached. Every version of every dataset stays answerable -- what it held, why it was made,
what changed -- until retention expires it: time travel and history read the same tables.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from lakehoused.catalog.folds import FOLDS, MODES
from lakehoused.catalog.model import (
    DatasetInfo,
    HistoryEntry,
    Part,
    VersionInfo,
    schema_diff,
)
from lakehoused.catalog.tables import (
    DATASET_COLUMNS,
    INDEXES,
    LAYOUT,
    LIVE_AT,
    PART_COLUMNS,
    TABLES,
    VERSION_COLUMNS,
)
from lakehoused.errors import LogError
from lakehoused.log import StoredEvent, canonical_json, read_snapshot
from lakehoused.schema import schema_from_json


class Catalog:
    """The projection of the log into datasets, versions and parts (implements Projection).

    Reads go through per-thread read-only connections the log binds (`bind`), each read in
    one snapshot; folds write through the log's connection inside its transaction.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._reader: Callable[[], sqlite3.Connection] | None = None

    def bind(self, reader: Callable[[], sqlite3.Connection]) -> None:
        """Read through per-thread read-only connections from now on (EventLog calls this)."""
        self._reader = reader

    # --- Projection -------------------------------------------------------------------

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create the tables if missing; a partial set, or another layout, is rebuilt from 0."""
        with self.lock:
            existing = {
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if r[0] in TABLES or r[0].startswith("catalog_")
            }
            stale = bool(existing) and existing != set(TABLES)
            if not stale and "catalog_position" in existing:
                columns = {r[1] for r in conn.execute("PRAGMA table_info(catalog_position)")}
                stale = "layout" not in columns or conn.execute(
                    "SELECT count(*) = 1 AND min(layout) = ? FROM catalog_position", (LAYOUT,)
                ).fetchone() != (1,)
            if stale:
                # Half a projection, or one an older build laid out, cannot be folded onto:
                # start again from zero (the log has everything).
                for table in existing:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
            for ddl, _ in TABLES.values():
                conn.execute(ddl)
            for ddl in INDEXES:
                conn.execute(ddl)
            conn.execute(
                "INSERT OR IGNORE INTO catalog_position (id, seq, layout) VALUES (1, 0, ?)",
                (LAYOUT,),
            )
            self._conn = conn

    def reset(self, conn: sqlite3.Connection) -> None:
        """Drop and recreate the catalog's tables, back at position 0."""
        with self.lock:
            for table in reversed(TABLES):
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            self.setup(conn)

    def position(self, conn: sqlite3.Connection | None = None) -> int:
        """The seq of the last event folded into the catalog (0 for none)."""
        if conn is not None:
            return conn.execute("SELECT seq FROM catalog_position WHERE id = 1").fetchone()[0]
        with self._snapshot() as c:
            return self.position(c)

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        """Fold one event and record its seq; a stale event raises VersionConflict."""
        with self.lock:
            at = self.position(conn)
            if event.seq != at + 1:
                raise LogError(
                    f"catalog: event seq {event.seq} does not follow position {at}; "
                    "run `lakehoused replay`"
                )
            fold = FOLDS.get(event.type)
            if fold is not None:
                try:
                    fold(conn, event)
                except (KeyError, TypeError, ValueError) as e:
                    raise LogError(
                        f"catalog: seq {event.seq} {event.type}: malformed data ({e!r})"
                    ) from e
            conn.execute("UPDATE catalog_position SET seq = ? WHERE id = 1", (event.seq,))

    # --- reads ------------------------------------------------------------------------

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection on which every read sees one catalog state."""
        if self._reader is None:
            # Not bound to a log's readers (an in-memory replay): the connection it folds on.
            if self._conn is None:
                raise LogError("catalog: not set up; open it through EventLog(db_path, catalog)")
            with self.lock:
                yield self._conn
            return
        with read_snapshot(self._reader(), "the catalog") as conn:
            yield conn

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset at its current version, sorted by name (dropped ones are gone)."""
        return self.changes_since(-1)[1]

    def changes_since(self, seq: int) -> tuple[int, list[DatasetInfo], list[str]]:
        """(position, datasets an event after `seq` changed, datasets dropped after `seq`).

        What keeps the query views current at a cost that grows with what changed, not with
        how many datasets there are.
        """
        with self._snapshot() as conn:
            position = self.position(conn)
            rows = conn.execute(
                f"SELECT {DATASET_COLUMNS}, dropped FROM catalog_datasets "
                "WHERE seq > ? ORDER BY name",
                (seq,),
            ).fetchall()
            live = [r[:-1] for r in rows if not r[-1]]
            parts: dict[str, list[Part]] = {}
            for name in (r[0] for r in live):
                parts[name] = []
            found = conn.execute(
                f"SELECT dataset, {PART_COLUMNS} FROM catalog_parts "
                "WHERE version_removed IS NULL AND dataset IN "
                "(SELECT name FROM catalog_datasets WHERE seq > ? AND NOT dropped) "
                "ORDER BY dataset, position",
                (seq,),
            )
            for r in found:
                parts[r[0]].append(Part(*r[1:]))
        dropped = [r[0] for r in rows if r[-1]]
        return position, [_dataset_info(r, parts[r[0]]) for r in live], dropped

    def summaries(self) -> list[dict]:
        """Every dataset as /datasets lists it (no parts, only their count), sorted by name."""
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {DATASET_COLUMNS}, (SELECT count(*) FROM catalog_parts p "
                "WHERE p.dataset = d.name AND p.version_removed IS NULL) "
                "FROM catalog_datasets d WHERE NOT dropped ORDER BY name"
            ).fetchall()
        keys = [c.strip() for c in DATASET_COLUMNS.split(",")]
        out = []
        for row in rows:
            item = dict(zip(keys, row[:-1], strict=True))
            item["schema"] = json.loads(item["schema"])
            del item["classes"]
            item["parts"] = row[-1]
            out.append(item)
        return out

    def dataset(self, name: str) -> DatasetInfo | None:
        """One dataset at its current version, or None if the catalog has no such dataset."""
        with self._snapshot() as conn:
            row = conn.execute(
                f"SELECT {DATASET_COLUMNS} FROM catalog_datasets WHERE name = ? AND NOT dropped",
                (name,),
            ).fetchone()
            if row is None:
                return None
            parts = conn.execute(
                f"SELECT {PART_COLUMNS} FROM catalog_parts "
                "WHERE dataset = ? AND version_removed IS NULL ORDER BY position",
                (name,),
            ).fetchall()
        return _dataset_info(row, [Part(*p) for p in parts])

    def names(self, *, dropped: bool = False) -> list[str]:
        """Every dataset's name, sorted; with `dropped`, those dropped as well."""
        where = "" if dropped else " WHERE NOT dropped"
        with self._snapshot() as conn:
            return [
                r[0]
                for r in conn.execute(f"SELECT name FROM catalog_datasets{where} ORDER BY name")
            ]

    def last_version(self, name: str) -> int:
        """The dataset's latest version number, dropped or not (0 if it never existed)."""
        with self._snapshot() as conn:
            row = conn.execute(
                "SELECT version FROM catalog_datasets WHERE name = ?", (name,)
            ).fetchone()
        return row[0] if row else 0

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a dataset, oldest first ([] for an unknown dataset)."""
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM catalog_versions WHERE dataset = ? "
                "ORDER BY version",
                (name,),
            ).fetchall()
        return [VersionInfo.from_row(r) for r in rows]

    def at_version(self, name: str, version: int) -> tuple[VersionInfo, list[Part]] | None:
        """One version of a dataset and the parts it held, or None if there is no such one."""
        with self._snapshot() as conn:
            row = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM catalog_versions WHERE dataset = ? AND version = ?",
                (name, version),
            ).fetchone()
            if row is None:
                return None
            parts = conn.execute(
                f"SELECT {PART_COLUMNS} FROM catalog_parts WHERE dataset = :dataset "
                f"AND {LIVE_AT} ORDER BY position",
                {"dataset": name, "version": version},
            ).fetchall()
        return VersionInfo.from_row(row), [Part(*p) for p in parts]

    def as_of(self, seq: int) -> list[tuple[str, VersionInfo, list[Part]]] | None:
        """Every dataset as it was right after event `seq`: its name, version and parts.

        None when `seq` is beyond the catalog's position. Dropped datasets are absent.
        """
        with self._snapshot() as conn:
            if seq > self.position(conn):
                return None
            rows = conn.execute(
                f"SELECT dataset, {VERSION_COLUMNS} FROM catalog_versions v "
                "WHERE seq = (SELECT max(seq) FROM catalog_versions w "
                "WHERE w.dataset = v.dataset AND w.seq <= ?) ORDER BY dataset",
                (seq,),
            ).fetchall()
            out = []
            for row in rows:
                version = VersionInfo.from_row(row[1:])
                if version.dropped:
                    continue
                parts = conn.execute(
                    f"SELECT {PART_COLUMNS} FROM catalog_parts WHERE dataset = :dataset "
                    f"AND {LIVE_AT} ORDER BY position",
                    {"dataset": row[0], "version": version.version},
                ).fetchall()
                out.append((row[0], version, [Part(*p) for p in parts]))
        return out

    def history(self, name: str) -> list[HistoryEntry]:
        """Every version of a dataset with what it added, removed, and how its schema changed."""
        with self._snapshot() as conn:
            versions = self.versions(name)
            parts = [
                (Part(*r[:-1]), r[-1])
                for r in conn.execute(
                    f"SELECT {PART_COLUMNS}, version_removed FROM catalog_parts "
                    "WHERE dataset = ? ORDER BY position",
                    (name,),
                )
            ]
        entries, before = [], []
        for v in versions:
            added = [p for p, _ in parts if p.version_added == v.version]
            removed = [p for p, gone in parts if gone == v.version]
            after = [] if v.dropped else v.schema
            entries.append(HistoryEntry(v, added, removed, schema_diff(before, after)))
            before = after
        return entries

    def for_ingest(
        self, name: str, source_sha256: str
    ) -> tuple[DatasetInfo | None, int, Part | None]:
        """What an ingest decides on, read at one state: the dataset now (None if absent or
        dropped), its latest version number (dropped ones count), and the current part these
        source bytes already are, if any."""
        with self._snapshot():
            return (
                self.dataset(name),
                self.last_version(name),
                self.find_source(name, source_sha256),
            )

    def find_source(self, dataset: str, source_sha256: str) -> Part | None:
        """The current part converted from these source bytes, if any (the exactly-once rule).

        Replace mode leaves one current part, the latest version's, so "a current part with
        this source" is the rule for both modes: the latest source (replace) or any part of
        the current version (append).
        """
        with self._snapshot() as conn:
            row = conn.execute(
                f"SELECT {PART_COLUMNS} FROM catalog_parts "
                "WHERE dataset = ? AND source_sha256 = ? AND version_removed IS NULL "
                "ORDER BY position LIMIT 1",
                (dataset, source_sha256),
            ).fetchone()
        return Part(*row) if row else None

    def referenced_objects(self) -> dict[str, str]:
        """Object key -> sha256 for every object a version not expired reads."""
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT DISTINCT p.object_key, p.object_sha256 FROM catalog_parts p "
                "JOIN catalog_versions v ON v.dataset = p.dataset AND v.expired_seq IS NULL "
                "AND v.version >= p.version_added "
                "AND (p.version_removed IS NULL OR v.version < p.version_removed) "
                "ORDER BY p.object_key"
            ).fetchall()
        return dict(rows)

    def digest(self) -> str:
        """sha256 over every catalog table (position included), dumped in a fixed order."""
        h = hashlib.sha256()
        with self._snapshot() as conn:
            for table, (_, order) in TABLES.items():
                cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
                header = [table, [c[0] for c in cur.description]]
                h.update(canonical_json(header).encode() + b"\n")
                for row in cur:
                    h.update(canonical_json(list(row)).encode() + b"\n")
        return h.hexdigest()


def _dataset_info(row: tuple, parts: list[Part]) -> DatasetInfo:
    name, version, mode, schema_text, fp, rows, size, created_at, updated_at, seq, classes = row
    return DatasetInfo(
        name=name,
        version=version,
        mode=mode,
        schema=schema_from_json(json.loads(schema_text)),
        fingerprint=fp,
        rows=rows,
        bytes=size,
        created_at=created_at,
        updated_at=updated_at,
        seq=seq,
        parts=parts,
        classes=json.loads(classes),
    )


def replay_digest(events: Iterable[StoredEvent]) -> str:
    """Fold events into a fresh in-memory catalog and return its digest.

    `lakehoused verify` compares this with the live projection's digest.
    """
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        catalog = Catalog()
        conn.execute("BEGIN")
        catalog.setup(conn)
        for event in events:
            catalog.apply(conn, event)
        conn.execute("COMMIT")
        return catalog.digest()
    finally:
        conn.close()


__all__ = [
    "MODES",
    "Catalog",
    "DatasetInfo",
    "HistoryEntry",
    "Part",
    "VersionInfo",
    "replay_digest",
]
