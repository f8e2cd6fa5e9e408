"""What the catalog answers with: plain data about datasets, their versions and parts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from lakehoused.schema import Column, schema_from_json, schema_to_json


@dataclass(frozen=True)
class Part:
    """One object in a dataset, with the source file it was converted from."""

    object_key: str
    object_sha256: str
    object_bytes: int
    rows: int
    source_uri: str | None
    source_name: str | None
    source_sha256: str
    source_bytes: int | None
    source_mtime: Any
    version_added: int

    def to_json(self) -> dict:
        """The part as the API shows it."""
        return asdict(self)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset at one version; `parts` are that version's objects, in order."""

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
    # Per column, the OR of the value classes its files held (ingest/types.py).
    classes: dict[str, int] = field(default_factory=dict)

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
    """One version of a dataset: the event that made it and the dataset's totals after it."""

    version: int
    seq: int
    at: str
    event: str  # the type of the event that made this version
    mode: str
    schema: list[Column]
    fingerprint: str
    rows: int
    bytes: int
    parts: int
    reason: str | None
    expired_seq: int | None

    @classmethod
    def from_row(cls, row: tuple) -> VersionInfo:
        """A `catalog_versions` row (VERSION_COLUMNS order)."""
        values = list(row)
        values[5] = schema_from_json(json.loads(values[5]))
        return cls(*values)

    @property
    def expired(self) -> bool:
        """Whether retention expired it (its objects may be gone)."""
        return self.expired_seq is not None

    @property
    def dropped(self) -> bool:
        """Whether this version is the dataset dropped."""
        return self.event == "dataset.dropped"

    def to_json(self) -> dict:
        """The version as the API shows it."""
        data = asdict(self)
        data["schema"] = schema_to_json(self.schema)
        data["expired"] = self.expired
        return data


@dataclass(frozen=True)
class HistoryEntry:
    """A version as `history` tells it: when, why, what it holds, and what changed."""

    version: VersionInfo
    added: list[Part]  # parts this version brought in
    removed: list[Part]  # parts it took out
    schema_diff: dict  # {"added": [...], "removed": [...], "retyped": [{"name", "from", "to"}]}

    def to_json(self) -> dict:
        """The entry as the API shows it."""
        return {
            **self.version.to_json(),
            "sources_added": [_source(p) for p in self.added],
            "sources_removed": [_source(p) for p in self.removed],
            "schema_diff": self.schema_diff,
        }


def _source(part: Part) -> dict:
    return {
        "name": part.source_name,
        "uri": part.source_uri,
        "sha256": part.source_sha256,
        "object": part.object_key,
        "rows": part.rows,
    }


def schema_diff(before: list[Column], after: list[Column]) -> dict:
    """What changed between two schemas: columns added, removed and retyped."""
    old = {c.name: c.type for c in before}
    new = {c.name: c.type for c in after}
    return {
        "added": [c.name for c in after if c.name not in old],
        "removed": [c.name for c in before if c.name not in new],
        "retyped": [
            {"name": name, "from": old[name], "to": kind}
            for name, kind in new.items()
            if name in old and old[name] != kind
        ],
    }
