"""Column schemas and their fingerprints: plain data shared by ingest and the catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

# The types a column can have, narrowest first within each family (DESIGN §3).
TYPES = ("BOOLEAN", "BIGINT", "DECIMAL(38,0)", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")


@dataclass(frozen=True)
class Column:
    """One column of a dataset or of a single object: its name, type and nullability."""

    name: str
    type: str
    nullable: bool = True

    def to_json(self) -> dict:
        """The column as it is written in an event."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Column:
        """The column as read back from an event."""
        return cls(name=data["name"], type=data["type"], nullable=bool(data.get("nullable", True)))


def fingerprint(columns: Iterable[Column]) -> str:
    """sha256 over the ordered (name, type) pairs; nullability is deliberately not part of it."""
    pairs = [[c.name, c.type] for c in columns]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def merge(existing: Sequence[Column], added: Sequence[Column]) -> list[Column]:
    """The schema of a dataset after `added` joins it: existing columns first, new ones after.

    A column is nullable in the result if it is nullable on either side, or if it is missing
    from one side (older parts read a new column as NULL).
    """
    by_name = {c.name: c for c in added}
    merged = [
        Column(
            c.name, c.type, c.nullable or by_name.get(c.name, c).nullable or c.name not in by_name
        )
        for c in existing
    ]
    known = {c.name for c in existing}
    merged += [Column(c.name, c.type, True) for c in added if c.name not in known]
    return merged


def schema_to_json(columns: Iterable[Column]) -> list[dict]:
    """A schema as written in events and API answers."""
    return [c.to_json() for c in columns]


def schema_from_json(data: Iterable[dict]) -> list[Column]:
    """A schema as read back from an event or the projection."""
    return [Column.from_json(d) for d in data]
