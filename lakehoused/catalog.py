"""The catalog: a projection of the event log into datasets, versions and parts (DESIGN §4).

The catalog is never edited in place: it is `fold(events)`, kept in the log's own database
and advanced in the same transaction as each append, with the seq it has reached. Each event
costs O(1) work: a replace marks the current parts removed, an append only adds one part;
the part list is never copied per version.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from lakehoused.errors import LogError, VersionConflict
from lakehoused.events import DatasetRegistered
from lakehoused.log import StoredEvent, canonical_json
from lakehoused.schema import Column, fingerprint, merge, schema_from_json, schema_to_json

MODES = ("replace", "append")

# Creation order is also the digest's fixed order; the ORDER BY is each table's key.
_TABLES: dict[str, tuple[str, str]] = {
    "catalog_position": (
        """CREATE TABLE IF NOT EXISTS catalog_position (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL
        ) STRICT""",
        "id",
    ),
    "catalog_datasets": (
        """CREATE TABLE IF NOT EXISTS catalog_datasets (
            name TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            mode TEXT NOT NULL,
            schema TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            rows INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            seq INTEGER NOT NULL
        ) STRICT""",
        "name",
    ),
    "catalog_versions": (
        """CREATE TABLE IF NOT EXISTS catalog_versions (
            dataset TEXT NOT NULL,
            version INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            mode TEXT NOT NULL,
            rows INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            object_key TEXT NOT NULL,
            source_sha256 TEXT NOT NULL,
            PRIMARY KEY (dataset, version)
        ) STRICT""",
        "dataset, version",
    ),
    # source_mtime is ANY: it is kept exactly as the ingest wrote it in the event.
    "catalog_parts": (
        """CREATE TABLE IF NOT EXISTS catalog_parts (
            dataset TEXT NOT NULL,
            position INTEGER NOT NULL,
            version_added INTEGER NOT NULL,
            version_removed INTEGER,
            object_key TEXT NOT NULL,
            object_sha256 TEXT NOT NULL,
            object_bytes INTEGER NOT NULL,
            rows INTEGER NOT NULL,
            source_uri TEXT,
            source_sha256 TEXT NOT NULL,
            source_bytes INTEGER,
            source_mtime ANY,
            PRIMARY KEY (dataset, position)
        ) STRICT""",
        "dataset, position",
    ),
}

# Partial indexes over current parts only, so reads and the exactly-once lookup stay fast
# however many replaced parts a dataset has accumulated.
_INDEXES = (
    """CREATE INDEX IF NOT EXISTS catalog_parts_current
        ON catalog_parts (dataset, position) WHERE version_removed IS NULL""",
    """CREATE INDEX IF NOT EXISTS catalog_parts_source
        ON catalog_parts (dataset, source_sha256) WHERE version_removed IS NULL""",
)

_PART_COLUMNS = (
    "object_key, object_sha256, object_bytes, rows, source_uri, source_sha256, "
    "source_bytes, source_mtime, version_added"
)
_DATASET_COLUMNS = (
    "name, version, mode, schema, fingerprint, rows, bytes, created_at, updated_at, seq"
)
_VERSION_COLUMNS = "version, seq, at, mode, rows, bytes, fingerprint, object_key, source_sha256"


@dataclass(frozen=True)
class Part:
    """One object in a dataset, with the source file it was converted from."""

    object_key: str
    object_sha256: str
    object_bytes: int
    rows: int
    source_uri: str | None
    source_sha256: str
    source_bytes: int | None
    source_mtime: Any
    version_added: int

    def to_json(self) -> dict:
        """The part as the API shows it."""
        return asdict(self)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset at its current version; `parts` are that version's objects, in order."""

    name: str
    version: int
    mode: str
    schema: list[Column]
    fingerprint: str
    rows: int
    bytes: int
    created_at: str
    updated_at: str
    seq: int
    parts: list[Part]

    def to_json(self) -> dict:
        """The dataset as the API shows it."""
        return {
            "name": self.name,
            "version": self.version,
            "mode": self.mode,
            "rows": self.rows,
            "bytes": self.bytes,
            "schema": schema_to_json(self.schema),
            "fingerprint": self.fingerprint,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "seq": self.seq,
            "parts": [p.to_json() for p in self.parts],
        }


@dataclass(frozen=True)
class VersionInfo:
    """One version of a dataset: the object it added and the dataset's totals after it."""

    version: int
    seq: int
    at: str
    mode: str
    rows: int
    bytes: int
    fingerprint: str
    object_key: str
    source_sha256: str

    def to_json(self) -> dict:
        """The version as the API shows it."""
        return asdict(self)


class Catalog:
    """The projection of the log into datasets, versions and parts (implements Projection).

    Reads use the connection it was set up with, under `lock`; EventLog adopts that lock so
    reads from server threads never interleave with a write on the same connection.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._reader: Callable[[], sqlite3.Connection] | None = None
        self._folds: dict[str, Callable[[sqlite3.Connection, StoredEvent], None]] = {
            DatasetRegistered.name: self._fold_registered,
            # ingest.rejected, ingest.duplicate and unknown types only advance the position.
        }

    def bind(self, reader: Callable[[], sqlite3.Connection]) -> None:
        """Read through per-thread read-only connections from now on (EventLog calls this)."""
        self._reader = reader

    # --- Projection ---

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create the catalog's tables if missing; a partial set is rebuilt from position 0."""
        with self.lock:
            existing = {
                r[0]
                for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if r[0] in _TABLES
            }
            partial = existing and existing != set(_TABLES)
            if not partial and "catalog_position" in existing:
                partial = conn.execute("SELECT count(*) FROM catalog_position").fetchone()[0] != 1
            if partial:
                # Half a projection cannot be trusted to fold onto; start again from zero.
                self._drop(conn)
            for ddl, _ in _TABLES.values():
                conn.execute(ddl)
            for ddl in _INDEXES:
                conn.execute(ddl)
            conn.execute("INSERT OR IGNORE INTO catalog_position (id, seq) VALUES (1, 0)")
            self._conn = conn

    def reset(self, conn: sqlite3.Connection) -> None:
        """Drop and recreate the catalog's tables, back at position 0."""
        with self.lock:
            self._drop(conn)
            self.setup(conn)

    def position(self, conn: sqlite3.Connection | None = None) -> int:
        """The seq of the last event folded into the catalog (0 for none)."""
        if conn is not None:
            return conn.execute("SELECT seq FROM catalog_position WHERE id = 1").fetchone()[0]
        with self._snapshot() as c:
            return self.position(c)

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        """Fold one event and record its seq; a stale registration raises VersionConflict."""
        with self.lock:
            at = self.position(conn)
            if event.seq != at + 1:
                raise LogError(
                    f"catalog: event seq {event.seq} does not follow position {at}; "
                    "run `lakehoused replay`"
                )
            fold = self._folds.get(event.type)
            if fold is not None:
                try:
                    fold(conn, event)
                except (KeyError, TypeError, ValueError) as e:
                    raise LogError(
                        f"catalog: seq {event.seq} {event.type}: malformed data ({e!r})"
                    ) from e
            conn.execute("UPDATE catalog_position SET seq = ? WHERE id = 1", (event.seq,))

    def _drop(self, conn: sqlite3.Connection) -> None:
        for table in reversed(_TABLES):
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    def _fold_registered(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        d = event.data
        name, version, mode = d["dataset"], int(d["version"]), d["mode"]
        obj, src = d["object"], d["source"]
        if mode not in MODES:
            raise LogError(f"catalog: seq {event.seq}: mode must be one of {MODES}, got {mode!r}")
        current = conn.execute(
            "SELECT version, schema, rows, bytes FROM catalog_datasets WHERE name = ?", (name,)
        ).fetchone()
        at_version = current[0] if current else 0
        if version != at_version + 1:
            raise VersionConflict(
                f"dataset {name!r}: registration of version {version} was built against version "
                f"{version - 1}, but the catalog is at version {at_version}; rebuild it and retry"
            )
        object_schema = schema_from_json(d["schema"])
        obj_rows, obj_bytes = int(obj["rows"]), int(obj["bytes"])
        if mode == "replace" or current is None:
            # A replace leaves exactly one current part, this object; the first part of a new
            # append dataset has nothing to remove and nothing to merge with.
            conn.execute(
                "UPDATE catalog_parts SET version_removed = ? "
                "WHERE dataset = ? AND version_removed IS NULL",
                (version, name),
            )
            columns, rows, size = object_schema, obj_rows, obj_bytes
        else:
            columns = merge(schema_from_json(json.loads(current[1])), object_schema)
            rows, size = current[2] + obj_rows, current[3] + obj_bytes
        dataset_fingerprint = fingerprint(columns)
        next_position = conn.execute(
            "SELECT coalesce(max(position), 0) + 1 FROM catalog_parts WHERE dataset = ?", (name,)
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO catalog_parts (dataset, position, version_added, object_key, "
            "object_sha256, object_bytes, rows, source_uri, source_sha256, source_bytes, "
            "source_mtime) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                next_position,
                version,
                obj["key"],
                obj["sha256"],
                obj_bytes,
                obj_rows,
                src.get("uri"),
                src["sha256"],
                src.get("bytes"),
                src.get("mtime"),
            ),
        )
        conn.execute(
            f"INSERT INTO catalog_datasets ({_DATASET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET version = excluded.version, mode = excluded.mode, "
            "schema = excluded.schema, fingerprint = excluded.fingerprint, rows = excluded.rows, "
            "bytes = excluded.bytes, updated_at = excluded.updated_at, seq = excluded.seq",
            (
                name,
                version,
                mode,
                canonical_json(schema_to_json(columns)),
                dataset_fingerprint,
                rows,
                size,
                event.at,
                event.at,
                event.seq,
            ),
        )
        conn.execute(
            f"INSERT INTO catalog_versions (dataset, {_VERSION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                version,
                event.seq,
                event.at,
                mode,
                rows,
                size,
                dataset_fingerprint,
                obj["key"],
                src["sha256"],
            ),
        )

    # --- reads ---

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
        conn = self._reader()
        if conn.in_transaction:  # already inside a snapshot on this thread
            yield conn
            return
        try:
            conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as e:
            raise LogError(f"read the catalog: {e}") from e
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[tuple]:
        with self._snapshot() as conn:
            return conn.execute(sql, tuple(args)).fetchall()

    def datasets(self) -> list[DatasetInfo]:
        """Every dataset at its current version, sorted by name."""
        return self.state()[1]

    def state(self) -> tuple[int, list[DatasetInfo]]:
        """The position and every dataset, read in one snapshot (what the views show)."""
        return self.changes_since(-1)

    def changes_since(self, seq: int) -> tuple[int, list[DatasetInfo]]:
        """The position and every dataset an event after `seq` changed, in one snapshot.

        What keeps the query views current at a cost that grows with what changed, not with
        how many datasets there are.
        """
        with self._snapshot() as conn:
            position = self.position(conn)
            rows = conn.execute(
                f"SELECT {_DATASET_COLUMNS} FROM catalog_datasets WHERE seq > ? ORDER BY name",
                (seq,),
            ).fetchall()
            parts: dict[str, list[Part]] = {}
            part_sql = (
                f"SELECT dataset, {_PART_COLUMNS} FROM catalog_parts "
                "WHERE version_removed IS NULL {} ORDER BY dataset, position"
            )
            if seq < 0:
                found = conn.execute(part_sql.format(""))
            else:
                found = conn.execute(
                    part_sql.format(
                        "AND dataset IN (SELECT name FROM catalog_datasets WHERE seq > ?)"
                    ),
                    (seq,),
                )
            for r in found:
                parts.setdefault(r[0], []).append(Part(*r[1:]))
        return position, [_dataset_info(r, parts.get(r[0], [])) for r in rows]

    def summaries(self) -> list[dict]:
        """Every dataset as /datasets lists it (no parts, only their count), sorted by name."""
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {_DATASET_COLUMNS}, (SELECT count(*) FROM catalog_parts p "
                "WHERE p.dataset = d.name AND p.version_removed IS NULL) "
                "FROM catalog_datasets d ORDER BY name"
            ).fetchall()
        keys = [c.strip() for c in _DATASET_COLUMNS.split(",")]
        out = []
        for row in rows:
            item = dict(zip(keys, row[:-1], strict=True))
            item["schema"] = json.loads(item["schema"])
            item["parts"] = row[-1]
            out.append(item)
        return out

    def dataset(self, name: str) -> DatasetInfo | None:
        """One dataset at its current version, or None if the catalog has no such dataset."""
        with self._snapshot() as conn:
            rows = conn.execute(
                f"SELECT {_DATASET_COLUMNS} FROM catalog_datasets WHERE name = ?", (name,)
            ).fetchall()
            if not rows:
                return None
            parts = conn.execute(
                f"SELECT {_PART_COLUMNS} FROM catalog_parts "
                "WHERE dataset = ? AND version_removed IS NULL ORDER BY position",
                (name,),
            ).fetchall()
        return _dataset_info(rows[0], [Part(*p) for p in parts])

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a dataset, oldest first ([] for an unknown dataset)."""
        rows = self._rows(
            f"SELECT {_VERSION_COLUMNS} FROM catalog_versions WHERE dataset = ? ORDER BY version",
            (name,),
        )
        return [VersionInfo(*r) for r in rows]

    def find_source(self, dataset: str, source_sha256: str) -> Part | None:
        """The current part converted from these source bytes, if any (the exactly-once rule).

        Replace mode leaves one current part, the latest version's, so "a current part with
        this source" is the rule for both modes: the latest source (replace) or any part of
        the current version (append).
        """
        rows = self._rows(
            f"SELECT {_PART_COLUMNS} FROM catalog_parts "
            "WHERE dataset = ? AND source_sha256 = ? AND version_removed IS NULL "
            "ORDER BY position LIMIT 1",
            (dataset, source_sha256),
        )
        return Part(*rows[0]) if rows else None

    def referenced_objects(self) -> dict[str, str]:
        """Object key -> sha256 for every object any registration ever referenced."""
        rows = self._rows(
            "SELECT DISTINCT object_key, object_sha256 FROM catalog_parts ORDER BY object_key"
        )
        return dict(rows)

    def digest(self) -> str:
        """sha256 over every catalog table (position included), dumped in a fixed order."""
        h = hashlib.sha256()
        with self._snapshot() as conn:
            for table, (_, order) in _TABLES.items():
                cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
                header = [table, [c[0] for c in cur.description]]
                h.update(canonical_json(header).encode() + b"\n")
                for row in cur:
                    h.update(canonical_json(list(row)).encode() + b"\n")
        return h.hexdigest()


def _dataset_info(row: tuple, parts: list[Part]) -> DatasetInfo:
    name, version, mode, schema_text, fp, rows, size, created_at, updated_at, seq = row
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
