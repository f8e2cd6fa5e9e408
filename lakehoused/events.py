"""Every event type, declared once: its past-tense wire name, its data, and how it reads.

The producer builds one of these and appends `.to_event()`; the catalog folds by `type`;
the CLI and the daemon's log lines use `describe()`; the docs test reads `EVENT_TYPES`.
The wire name is what the log stores, never a Python import path (datasette `events.py`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from lakehoused.log import Event, StoredEvent


@dataclass(frozen=True)
class LakehouseEvent:
    """Base of every event type: `name` is the wire name stored in the log's `type` column."""

    name: ClassVar[str]
    level: ClassVar[str] = "info"  # how a log line about it is levelled

    @property
    def dataset_name(self) -> str | None:
        """The dataset the event concerns (the log's `dataset` column), if any."""
        return getattr(self, "dataset", None)

    def event_id(self) -> str | None:
        """A deterministic id where a retry must not record the event twice; else None."""
        return None

    def data(self) -> dict:
        """The event's `data`, plain JSON."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def to_event(self) -> Event:
        """The envelope the log appends."""
        ident = self.event_id()
        extra = {"id": ident} if ident else {}
        return Event(self.name, self.data(), dataset=self.dataset_name, **extra)

    @classmethod
    def from_data(cls, data: dict) -> LakehouseEvent:
        """The event read back from a stored event's data (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One line for a person: what happened."""
        raise NotImplementedError


def _source_name(source: dict) -> str:
    return source.get("name") or source.get("uri", "?")


@dataclass(frozen=True)
class DatasetRegistered(LakehouseEvent):
    """A source file became a dataset's new version (replace) or one more part (append)."""

    name: ClassVar[str] = "dataset.registered"

    dataset: str
    version: int
    mode: str
    object: dict  # key, sha256, bytes, rows
    source: dict  # uri, name, sha256, bytes, mtime
    schema: list[dict]
    fingerprint: str
    dialect: dict | None = None  # how the file was read, sniffed or set
    rejected_rows: int | None = None  # bad records kept aside (on_bad_rows = "quarantine")
    classes: dict | None = None  # per column, the OR of its values' classes (ingest/types.py)

    def event_id(self) -> str:
        return registration_id(self.dataset, self.source["sha256"], self.version - 1)

    def describe(self) -> str:
        kept = self.rejected_rows or 0
        aside = ""
        if kept:
            rows = "1 bad row" if kept == 1 else f"{kept} bad rows"
            aside = f"; {rows} kept in {self.dataset}__rejected_rows"
        return (
            f"registered {_source_name(self.source)} as {self.dataset} version {self.version} "
            f"({self.mode}): {self.object['rows']} rows, object {self.object['key']}{aside}"
        )


@dataclass(frozen=True)
class IngestDuplicate(LakehouseEvent):
    """A source file's bytes are already in the dataset's current version: nothing to do."""

    name: ClassVar[str] = "ingest.duplicate"

    source: dict
    version: int
    object: str  # the key of the object those bytes became
    dataset: str | None = None

    def describe(self) -> str:
        return (
            f"duplicate {_source_name(self.source)}: {self.dataset} version {self.version} "
            "already holds these bytes"
        )


@dataclass(frozen=True)
class IngestRejected(LakehouseEvent):
    """A source file cannot be ingested; `reason` says why and what to change."""

    name: ClassVar[str] = "ingest.rejected"
    level: ClassVar[str] = "warning"

    source: dict
    reason: str
    details: dict = field(default_factory=dict)
    dataset: str | None = None

    def data(self) -> dict:
        # details stays even when empty: readers rely on the key.
        return {k: v for k, v in asdict(self).items() if v is not None or k == "details"}

    def describe(self) -> str:
        return f"rejected {_source_name(self.source)}: {self.reason}"


@dataclass(frozen=True)
class SchemaChanged(LakehouseEvent):
    """A registration changed the dataset's columns (recorded just before it, in one step)."""

    name: ClassVar[str] = "dataset.schema_changed"

    dataset: str
    version: int  # the version whose registration changes the schema
    before: list[dict]
    after: list[dict]
    added: list[str]
    removed: list[str]
    retyped: list[dict]  # {"name", "from", "to"}
    setting: str  # what allowed it: on_schema_change = "add_columns" or "overwrite"

    def describe(self) -> str:
        parts = [f"added {', '.join(self.added)}"] if self.added else []
        parts += [f"removed {', '.join(self.removed)}"] if self.removed else []
        parts += [f"{r['name']} {r['from']} -> {r['to']}" for r in self.retyped]
        return f"schema of {self.dataset} changes at version {self.version}: {'; '.join(parts)}"


@dataclass(frozen=True)
class DatasetDropped(LakehouseEvent):
    """A person dropped the dataset: it leaves the catalog; its history stays."""

    name: ClassVar[str] = "dataset.dropped"
    level: ClassVar[str] = "warning"

    dataset: str
    version: int
    reason: str

    def describe(self) -> str:
        return f"dropped {self.dataset} (version {self.version}): {self.reason}"


@dataclass(frozen=True)
class DatasetRolledBack(LakehouseEvent):
    """A person rolled the dataset back: a new version whose objects are an old one's."""

    name: ClassVar[str] = "dataset.rolled_back"
    level: ClassVar[str] = "warning"

    dataset: str
    version: int
    to_version: int
    reason: str

    def describe(self) -> str:
        return (
            f"rolled {self.dataset} back to version {self.to_version} as version "
            f"{self.version}: {self.reason}"
        )


@dataclass(frozen=True)
class PartRetracted(LakehouseEvent):
    """A person took one part out of an append dataset: a new version without it."""

    name: ClassVar[str] = "dataset.part_retracted"
    level: ClassVar[str] = "warning"

    dataset: str
    version: int
    part: str  # the object key of the part taken out
    reason: str

    def describe(self) -> str:
        return f"retracted {self.part} from {self.dataset} as version {self.version}: {self.reason}"


@dataclass(frozen=True)
class ColumnWidened(LakehouseEvent):
    """A person widened a column: every current part rewritten under the wider type."""

    name: ClassVar[str] = "dataset.widened"

    dataset: str
    version: int
    column: str
    from_type: str
    to_type: str
    parts: list[dict]  # {"replaces", "key", "sha256", "bytes", "rows"}, in part order
    schema: list[dict]
    fingerprint: str
    reason: str

    def describe(self) -> str:
        return (
            f"widened {self.dataset}.{self.column} from {self.from_type} to {self.to_type} "
            f"as version {self.version} ({len(self.parts)} parts rewritten): {self.reason}"
        )


@dataclass(frozen=True)
class VersionsExpired(LakehouseEvent):
    """Retention expired old versions: `gc` may then remove objects no kept version reads."""

    name: ClassVar[str] = "dataset.versions_expired"

    dataset: str
    versions: list[int]
    reason: str

    def describe(self) -> str:
        listed = ", ".join(str(v) for v in self.versions)
        return f"expired versions {listed} of {self.dataset}: {self.reason}"


EVENT_TYPES: dict[str, type[LakehouseEvent]] = {
    cls.name: cls
    for cls in (
        DatasetRegistered,
        IngestDuplicate,
        IngestRejected,
        SchemaChanged,
        DatasetDropped,
        DatasetRolledBack,
        PartRetracted,
        ColumnWidened,
        VersionsExpired,
    )
}
"""Every event type by wire name."""


def registration_id(dataset: str, source_sha256: str, previous_version: int) -> str:
    """A registration's event id: the same file onto the same version is the same event."""
    text = f"dataset.registered\n{dataset}\n{source_sha256}\n{previous_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse(stored: StoredEvent) -> LakehouseEvent | None:
    """A stored event as its declared type; None for a type this build does not know."""
    cls = EVENT_TYPES.get(stored.type)
    if cls is None:
        return None
    data: dict[str, Any] = dict(stored.data)
    if "dataset" in {f.name for f in fields(cls)} and "dataset" not in data:
        data["dataset"] = stored.dataset
    return cls.from_data(data)


def describe(stored: StoredEvent) -> str:
    """One line for a person about any stored event, known type or not."""
    event = parse(stored)
    if event is None:
        return f"{stored.type}: {str(stored.data)[:120]}"
    return event.describe()
