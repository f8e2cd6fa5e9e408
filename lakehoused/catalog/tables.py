"""The catalog's tables in the log's database: their DDL, their layout version, their columns."""

from __future__ import annotations

LAYOUT = 2
"""The tables' layout. A projection in another layout is dropped and folded again from the
log at open: it is a projection, so nothing is lost."""

# Creation order is also the digest's fixed order; the ORDER BY is each table's key.
TABLES: dict[str, tuple[str, str]] = {
    "catalog_position": (
        """CREATE TABLE IF NOT EXISTS catalog_position (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL,
            layout INTEGER NOT NULL
        ) STRICT""",
        "id",
    ),
    # One row per dataset ever registered; `dropped` when its current version is a drop.
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
            seq INTEGER NOT NULL,
            classes TEXT NOT NULL,
            dropped INTEGER NOT NULL
        ) STRICT""",
        "name",
    ),
    # Every version: the event that made it, and the dataset's totals and schema after it.
    "catalog_versions": (
        """CREATE TABLE IF NOT EXISTS catalog_versions (
            dataset TEXT NOT NULL,
            version INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            event TEXT NOT NULL,
            mode TEXT NOT NULL,
            schema TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            rows INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            parts INTEGER NOT NULL,
            classes TEXT NOT NULL,
            reason TEXT,
            expired_seq INTEGER,
            PRIMARY KEY (dataset, version)
        ) STRICT""",
        "dataset, version",
    ),
    # A part is live in versions [version_added, version_removed). source_mtime is ANY: it
    # is kept exactly as the ingest wrote it in the event.
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
            source_name TEXT,
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
INDEXES = (
    """CREATE INDEX IF NOT EXISTS catalog_parts_current
        ON catalog_parts (dataset, position) WHERE version_removed IS NULL""",
    """CREATE INDEX IF NOT EXISTS catalog_parts_source
        ON catalog_parts (dataset, source_sha256) WHERE version_removed IS NULL""",
    """CREATE INDEX IF NOT EXISTS catalog_versions_seq ON catalog_versions (seq)""",
)

PART_COLUMNS = (
    "object_key, object_sha256, object_bytes, rows, source_uri, source_name, source_sha256, "
    "source_bytes, source_mtime, version_added"
)
DATASET_COLUMNS = (
    "name, version, mode, schema, fingerprint, rows, bytes, created_at, updated_at, seq, classes"
)
VERSION_COLUMNS = (
    "version, seq, at, event, mode, schema, fingerprint, rows, bytes, parts, reason, expired_seq"
)
LIVE_AT = "version_added <= :version AND (version_removed IS NULL OR version_removed > :version)"
"""Parts live at version :version."""
