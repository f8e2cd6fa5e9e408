"""How each event type changes the catalog: one fold per type, each O(1) in the usual case.

Every fold that makes a version checks it follows the dataset's current version, so an
event built against a catalog that has moved on (another writer got there first) raises
VersionConflict and rolls its append back: the writer looks again and retries.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from lakehoused.catalog.tables import DATASET_COLUMNS, LIVE_AT, PART_COLUMNS
from lakehoused.errors import LogError, VersionConflict
from lakehoused.events import (
    ColumnWidened,
    DatasetDropped,
    DatasetRegistered,
    DatasetRolledBack,
    PartRetracted,
    VersionsExpired,
)
from lakehoused.log import StoredEvent, canonical_json
from lakehoused.schema import Column, fingerprint, merge, schema_from_json, schema_to_json

MODES = ("replace", "append")

Fold = Callable[[sqlite3.Connection, StoredEvent], None]


@dataclass(frozen=True)
class _Current:
    """A dataset's row as a fold sees it."""

    version: int
    mode: str
    schema: list[Column]
    rows: int
    bytes: int
    created_at: str
    dropped: bool
    classes: dict[str, int]


def _current(conn: sqlite3.Connection, name: str) -> _Current | None:
    row = conn.execute(
        "SELECT version, mode, schema, rows, bytes, created_at, dropped, classes "
        "FROM catalog_datasets WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    version, mode, schema, rows, size, created_at, dropped, classes = row
    columns = schema_from_json(json.loads(schema))
    return _Current(
        version, mode, columns, rows, size, created_at, bool(dropped), json.loads(classes)
    )


def _follows(name: str, version: int, current: _Current | None, what: str) -> None:
    at = current.version if current else 0
    if version != at + 1:
        raise VersionConflict(
            f"dataset {name!r}: {what} of version {version} was built against version "
            f"{version - 1}, but the catalog is at version {at}; rebuild it and retry"
        )


def _live(current: _Current | None, name: str, what: str) -> _Current:
    if current is None or current.dropped:
        raise LogError(f"catalog: {what}: dataset {name!r} does not exist")
    return current


def _remove_current_parts(conn: sqlite3.Connection, name: str, version: int) -> None:
    conn.execute(
        "UPDATE catalog_parts SET version_removed = ? "
        "WHERE dataset = ? AND version_removed IS NULL",
        (version, name),
    )


def _add_part(conn: sqlite3.Connection, name: str, version: int, values: tuple) -> None:
    """Insert a live part; `values` in PART_COLUMNS order without version_added."""
    position = conn.execute(
        "SELECT coalesce(max(position), 0) + 1 FROM catalog_parts WHERE dataset = ?", (name,)
    ).fetchone()[0]
    conn.execute(
        f"INSERT INTO catalog_parts (dataset, position, {PART_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, position, *values, version),
    )


def _totals(conn: sqlite3.Connection, name: str) -> tuple[int, int, int]:
    """(rows, bytes, parts) of the current parts."""
    rows, size, count = conn.execute(
        "SELECT coalesce(sum(rows), 0), coalesce(sum(object_bytes), 0), count(*) "
        "FROM catalog_parts WHERE dataset = ? AND version_removed IS NULL",
        (name,),
    ).fetchone()
    return rows, size, count


def _record(
    conn: sqlite3.Connection,
    event: StoredEvent,
    name: str,
    version: int,
    mode: str,
    columns: list[Column],
    *,
    created_at: str | None,
    classes: dict[str, int],
    dropped: bool = False,
    reason: str | None = None,
    totals: tuple[int, int, int] | None = None,
) -> None:
    """Write the dataset's new state and its version row."""
    rows, size, parts = totals or _totals(conn, name)
    schema_text = canonical_json(schema_to_json(columns))
    classes_text = canonical_json(classes)
    print_ = fingerprint(columns)
    conn.execute(
        f"INSERT INTO catalog_datasets ({DATASET_COLUMNS}, dropped) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET version = excluded.version, mode = excluded.mode, "
        "schema = excluded.schema, fingerprint = excluded.fingerprint, rows = excluded.rows, "
        "bytes = excluded.bytes, created_at = excluded.created_at, "
        "updated_at = excluded.updated_at, seq = excluded.seq, classes = excluded.classes, "
        "dropped = excluded.dropped",
        (
            name,
            version,
            mode,
            schema_text,
            print_,
            rows,
            size,
            created_at or event.at,
            event.at,
            event.seq,
            classes_text,
            int(dropped),
        ),
    )
    conn.execute(
        "INSERT INTO catalog_versions (dataset, version, seq, at, event, mode, schema, "
        "fingerprint, rows, bytes, parts, classes, reason, expired_seq) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (name, version, event.seq, event.at, event.type, mode, schema_text, print_, rows, size,
         parts, classes_text, reason),
    )  # fmt: skip


def fold_registered(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """A file became the new version (replace) or one more part (append)."""
    d = event.data
    name, version, mode = d["dataset"], int(d["version"]), d["mode"]
    obj, src = d["object"], d["source"]
    if mode not in MODES:
        raise LogError(f"catalog: seq {event.seq}: mode must be one of {MODES}, got {mode!r}")
    current = _current(conn, name)
    _follows(name, version, current, "registration")
    columns = schema_from_json(d["schema"])
    classes = {k: int(v) for k, v in (d.get("classes") or {}).items()}
    rows, size = int(obj["rows"]), int(obj["bytes"])
    fresh = current is None or current.dropped
    if mode == "replace" or fresh:
        # A replace leaves exactly one current part, this object; so does the first part of
        # an append dataset (or of one dropped before).
        _remove_current_parts(conn, name, version)
        parts = 1
    else:
        assert current is not None
        columns = merge(current.schema, columns)
        classes = {c.name: current.classes.get(c.name, 0) | classes.get(c.name, 0) for c in columns}
        parts = _totals(conn, name)[2] + 1
        rows, size = current.rows + rows, current.bytes + size
    values = (
        obj["key"],
        obj["sha256"],
        int(obj["bytes"]),
        int(obj["rows"]),
        src.get("uri"),
        src.get("name"),
        src["sha256"],
        src.get("bytes"),
        src.get("mtime"),
    )
    _add_part(conn, name, version, values)
    created = None if fresh else current.created_at  # type: ignore[union-attr]
    _record(conn, event, name, version, mode, columns, created_at=created, classes=classes,
            totals=(rows, size, parts))  # fmt: skip


def fold_dropped(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """The dataset leaves the catalog; its versions and parts stay for history."""
    d = DatasetDropped.from_data(event.data)
    current = _live(_current(conn, d.dataset), d.dataset, "drop")
    _follows(d.dataset, d.version, current, "drop")
    _remove_current_parts(conn, d.dataset, d.version)
    _record(conn, event, d.dataset, d.version, current.mode, current.schema,
            created_at=current.created_at, classes=current.classes, dropped=True,
            reason=d.reason)  # fmt: skip


def fold_rolled_back(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """A new version whose parts are an old version's, in their order."""
    d = DatasetRolledBack.from_data(event.data)
    current = _current(conn, d.dataset)
    _follows(d.dataset, d.version, current, "rollback")
    target = conn.execute(
        "SELECT mode, schema, event, classes FROM catalog_versions "
        "WHERE dataset = ? AND version = ?",
        (d.dataset, d.to_version),
    ).fetchone()
    if target is None or target[2] == DatasetDropped.name:
        raise LogError(f"catalog: seq {event.seq}: {d.dataset} has no version {d.to_version}")
    old_parts = conn.execute(
        f"SELECT {PART_COLUMNS} FROM catalog_parts WHERE dataset = :dataset AND {LIVE_AT} "
        "ORDER BY position",
        {"dataset": d.dataset, "version": d.to_version},
    ).fetchall()
    _remove_current_parts(conn, d.dataset, d.version)
    for part in old_parts:
        _add_part(conn, d.dataset, d.version, part[:-1])
    mode, schema_text = target[0], target[1]
    created = current.created_at if current else None
    _record(conn, event, d.dataset, d.version, mode, schema_from_json(json.loads(schema_text)),
            created_at=created, classes=json.loads(target[3]), reason=d.reason)  # fmt: skip


def fold_retracted(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """One part leaves the current version of an append dataset."""
    d = PartRetracted.from_data(event.data)
    current = _live(_current(conn, d.dataset), d.dataset, "retract")
    _follows(d.dataset, d.version, current, "retraction")
    changed = conn.execute(
        "UPDATE catalog_parts SET version_removed = ? "
        "WHERE dataset = ? AND object_key = ? AND version_removed IS NULL",
        (d.version, d.dataset, d.part),
    ).rowcount
    if changed == 0:
        raise LogError(f"catalog: seq {event.seq}: {d.dataset} has no current part {d.part}")
    _record(conn, event, d.dataset, d.version, current.mode, current.schema,
            created_at=current.created_at, classes=current.classes, reason=d.reason)  # fmt: skip


def fold_widened(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """Every current part replaced by its rewrite under the wider type, sources kept."""
    d = ColumnWidened.from_data(event.data)
    current = _live(_current(conn, d.dataset), d.dataset, "widen")
    _follows(d.dataset, d.version, current, "widening")
    old = {
        row[0]: row
        for row in conn.execute(
            f"SELECT {PART_COLUMNS} FROM catalog_parts "
            "WHERE dataset = ? AND version_removed IS NULL ORDER BY position",
            (d.dataset,),
        )
    }
    _remove_current_parts(conn, d.dataset, d.version)
    for new in d.parts:
        was = old[new["replaces"]]
        values = (new["key"], new["sha256"], int(new["bytes"]), int(new["rows"]), *was[4:9])
        _add_part(conn, d.dataset, d.version, values)
    _record(conn, event, d.dataset, d.version, current.mode, schema_from_json(d.schema),
            created_at=current.created_at, classes=current.classes, reason=d.reason)  # fmt: skip


def fold_expired(conn: sqlite3.Connection, event: StoredEvent) -> None:
    """Versions retention let go: their objects may be collected unless a kept one reads them."""
    d = VersionsExpired.from_data(event.data)
    for version in d.versions:
        conn.execute(
            "UPDATE catalog_versions SET expired_seq = ? "
            "WHERE dataset = ? AND version = ? AND expired_seq IS NULL",
            (event.seq, d.dataset, int(version)),
        )


FOLDS: dict[str, Fold] = {
    DatasetRegistered.name: fold_registered,
    DatasetDropped.name: fold_dropped,
    DatasetRolledBack.name: fold_rolled_back,
    PartRetracted.name: fold_retracted,
    ColumnWidened.name: fold_widened,
    VersionsExpired.name: fold_expired,
    # ingest.rejected, ingest.duplicate, dataset.schema_changed and types this build does not
    # know only advance the position.
}
"""The fold of each event type that changes the catalog."""
