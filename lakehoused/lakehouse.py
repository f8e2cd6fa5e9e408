"""The lakehouse: store, event log and catalog wired together, and the ingest of one file.

The ingest follows DESIGN §5 in this order, so a crash at any point is harmless:
1. convert to a temporary file, fsync          (crash: an orphan temp file, removed on open)
2. put the object under its content address    (crash: an orphan object, `gc` removes it)
3. append the event + update the projection    (one transaction: both or neither)
4. (the daemon refreshes its views)
5. (the daemon archives the source)            (crash before: the re-drop is a duplicate)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from lakehoused import faults, names
from lakehoused.catalog import Catalog, replay_digest
from lakehoused.config import Config
from lakehoused.errors import DuplicateEvent, LakehousedError, RejectedFile, VersionConflict
from lakehoused.ingest import (
    REJECTED_ROWS_COLUMNS,
    REJECTED_ROWS_SUFFIX,
    Conversion,
    convert,
    format_for,
)
from lakehoused.log import Event, EventLog, StoredEvent, read_export
from lakehoused.query import QueryEngine, ViewSpec
from lakehoused.schema import fingerprint, schema_to_json
from lakehoused.store import LocalObjectStore, ObjectStore, object_key
from lakehoused.store.local import TempObject, file_sha256

GC_GRACE_S = 15 * 60  # an unreferenced object younger than this may belong to an ingest
_RETRIES = 5  # another writer moved the dataset on meanwhile: rebuild the event and retry


@dataclass(frozen=True)
class Outcome:
    """What became of one source file: registered, duplicate or rejected, and its event."""

    status: str
    source: Path
    dataset: str | None
    event: StoredEvent
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file ended registered or as a harmless duplicate."""
        return self.status != "rejected"


@dataclass
class GcReport:
    """What `gc` removed (or would remove, with --dry-run)."""

    objects: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)
    skipped_in_flight: int = 0


def registration_id(dataset: str, source_sha256: str, previous_version: int) -> str:
    """A registration's event id: the same file onto the same version is the same event."""
    text = f"dataset.registered\n{dataset}\n{source_sha256}\n{previous_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_facts(path: Path) -> dict:
    """What an event records of a source file: uri, sha256, bytes, mtime."""
    stat = path.stat()
    return {
        "uri": path.resolve().as_uri(),
        "sha256": file_sha256(path),
        "bytes": stat.st_size,
        "mtime": datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="microseconds"),
    }


class Lakehouse:
    """One state directory and object store, opened for reading and ingesting."""

    def __init__(self, config: Config, store: ObjectStore | None = None) -> None:
        self.config = config
        self.store: ObjectStore = store or LocalObjectStore(config.store.path)
        self.catalog = Catalog()
        self.log = EventLog(config.db_path, projection=self.catalog)

    def close(self) -> None:
        """Close the log."""
        self.log.close()

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest ---------------------------------------------------------------------------

    def locate(
        self, path: Path, dataset: str | None = None, mode: str | None = None
    ) -> tuple[str, str]:
        """The dataset and mode a source file feeds (DESIGN §2); RejectedFile if it has none.

        Inside the inbox, the file's place decides; elsewhere the file name does. Then the
        dataset's config, then an explicit `mode`, override the mode.
        """
        if dataset is not None:
            name, by_location = names.normalise_dataset_name(dataset), names.REPLACE
            if names.accepted_suffix(path.name) is None:
                names.locate(path.name)  # raises: only CSV/TSV are ingested
        else:
            try:
                relative = path.resolve().relative_to(self.config.inbox.path.resolve())
            except ValueError:
                relative = Path(path.name)
            entry = names.locate(relative)
            name, by_location = entry.dataset, entry.mode
        return name, mode or self.config.dataset_options(name).mode or by_location

    def ingest_file(
        self,
        path: Path,
        *,
        dataset: str | None = None,
        mode: str | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> Outcome:
        """Register one source file exactly once, or record why it was rejected."""
        path = Path(path)
        source = source_facts(path)
        name: str | None = None
        try:
            name, mode = self.locate(path, dataset, mode)
            for _ in range(_RETRIES):
                try:
                    return self._register(path, source, name, mode, progress)
                except (VersionConflict, DuplicateEvent):
                    self.log.catch_up()  # another writer got there first: look again
            raise LakehousedError(f"dataset {name} kept changing under this ingest; try again")
        except RejectedFile as e:
            return self.reject(path, name, e.reason, e.details, source=source)

    def reject(
        self,
        path: Path,
        dataset: str | None,
        reason: str,
        details: dict,
        *,
        source: dict | None = None,
    ) -> Outcome:
        """Record that a source file was rejected, and why (the ingest.rejected event)."""
        event = self.log.append(
            Event(
                "ingest.rejected",
                {"source": source or source_facts(path), "reason": reason, "details": details},
                dataset=dataset,
            )
        )
        return Outcome("rejected", path, dataset, event, reason)

    def _register(
        self,
        path: Path,
        source: dict,
        name: str,
        mode: str,
        progress: Callable[[float], None] | None,
    ) -> Outcome:
        current = self.catalog.dataset(name)
        known = self.catalog.find_source(name, source["sha256"])
        if known is not None:
            # Same bytes as what the dataset already holds: the crash-after-append case too.
            event = self.log.append(
                Event(
                    "ingest.duplicate",
                    {"source": source, "version": current.version, "object": known.object_key},
                    dataset=name,
                )
            )
            return Outcome("duplicate", path, name, event)

        options = self.config.dataset_options(name)
        with self.store.new_temp() as temp, self.store.new_temp() as rejects:
            conversion = convert(
                path,
                temp.path,
                format_for(options, path.name),
                dataset=name,
                hints=options.types,
                existing=current.schema if current else None,
                on_schema_change=options.on_schema_change,
                progress=progress,
                rejects_target=rejects.path,
            )
            if conversion.rejects is not None:
                # Registered first: a retry after a crash finds it and goes on to the main one.
                self._register_rejects(source, name, conversion, rejects)
            sha256, size = temp.finish()
            faults.point("crash_after_convert", path.name)
            key = object_key(name, sha256)
            self.store.put(key, temp)
            faults.point("crash_after_put", path.name)
            previous = current.version if current else 0
            # The temp file stays locked until the event is in: gc sees the ingest in flight.
            event = self.log.append(
                Event(
                    "dataset.registered",
                    {
                        "dataset": name,
                        "version": previous + 1,
                        "mode": mode,
                        "object": {
                            "key": key,
                            "sha256": sha256,
                            "bytes": size,
                            "rows": conversion.rows,
                        },
                        "source": source,
                        "schema": schema_to_json(conversion.columns),
                        "fingerprint": fingerprint(conversion.columns),
                        "dialect": conversion.dialect,
                        "rejected_rows": conversion.rejected_rows,
                    },
                    dataset=name,
                    id=registration_id(name, source["sha256"], previous),
                )
            )
        faults.point("crash_after_append", path.name)
        return Outcome("registered", path, name, event)

    def _register_rejects(
        self, source: dict, name: str, conversion: Conversion, temp: TempObject
    ) -> None:
        """Register the rejected records of a file as one more part of <name>__rejected_rows."""
        companion = name + REJECTED_ROWS_SUFFIX
        if not names.is_valid_dataset_name(companion):
            raise RejectedFile(
                f"dataset {name} is too long to keep bad rows beside it in {companion} "
                f"(63 characters at most): rename the file or folder, or remove "
                f"datasets.{name}.on_bad_rows"
            )
        if self.catalog.find_source(companion, source["sha256"]) is not None:
            return  # registered before a crash or a retry: once is enough
        current = self.catalog.dataset(companion)
        previous = current.version if current else 0
        sha256, size = temp.finish()
        key = object_key(companion, sha256)
        self.store.put(key, temp)
        columns = list(REJECTED_ROWS_COLUMNS)
        self.log.append(
            Event(
                "dataset.registered",
                {
                    "dataset": companion,
                    "version": previous + 1,
                    "mode": names.APPEND,
                    "object": {
                        "key": key,
                        "sha256": sha256,
                        "bytes": size,
                        "rows": conversion.rejected_rows,
                    },
                    "source": source,
                    "schema": schema_to_json(columns),
                    "fingerprint": fingerprint(columns),
                    "dialect": conversion.dialect,
                    "rejected_rows": 0,
                },
                dataset=companion,
                id=registration_id(companion, source["sha256"], previous),
            )
        )

    # -- operations -----------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Every fault found: hash chain, seq gaps, replay vs projection, objects' sha256."""
        self.log.catch_up()
        problems = list(self.log.verify_chain())
        replayed, live = replay_digest(self.log.read()), self.catalog.digest()
        if replayed != live:
            problems.append(f"projection digest {live[:12]} differs from replay {replayed[:12]}")
        for key, sha256 in sorted(self.catalog.referenced_objects().items()):
            if not self.store.exists(key):
                problems.append(f"object {key} is missing")
            elif (actual := self.store.sha256(key)) != sha256:
                problems.append(f"object {key} holds bytes with sha256 {actual}, not {sha256}")
        return problems

    def gc(self, *, dry_run: bool = False, grace_s: float = GC_GRACE_S) -> GcReport:
        """Remove objects no event references, and stale temp files.

        Never an object younger than `grace_s`, and none at all while an ingest is between
        putting its object and appending its event (delta-rs #3645: a VACUUM that raced a
        writer deleted committed data).
        """
        report = GcReport()
        in_flight = self.store.ingests_in_flight()
        self.log.catch_up()
        referenced = self.catalog.referenced_objects()
        for key in self.store.object_keys():
            if key in referenced or self.store.age_s(key) < grace_s:
                continue
            if in_flight:
                report.skipped_in_flight += 1
                continue
            report.objects.append(key)
            if not dry_run:
                self.store.delete(key)
        if not dry_run:
            report.temps = self.store.remove_stale_temps(grace_s)
        return report

    def view_specs(self) -> dict[str, ViewSpec]:
        """Each dataset as the query engine sees it: its schema and its current objects."""
        return {
            d.name: ViewSpec(
                d.schema, [self.store.local_path(p.object_key) for p in d.parts], d.bytes
            )
            for d in self.catalog.datasets()
        }

    def open_engine(self) -> QueryEngine:
        """A sandboxed query engine with one view per dataset, at the catalog's position."""
        server = self.config.server
        engine = QueryEngine(
            self.config.store.path,
            memory_limit=server.memory_limit,
            timeout_s=server.query_timeout_s,
            cache_bytes=server.memory_cache_bytes,
        )
        engine.sync(self.view_specs(), self.log.last_seq)
        return engine

    def replay(self) -> str:
        """Rebuild the projection from the log alone; return its digest."""
        self.log.replay()
        return self.catalog.digest()

    def restore(self, export: TextIO) -> int:
        """Fill an empty log from a `log export` file (JSON Lines); return the events read."""
        if self.log.last_seq:
            raise LakehousedError(
                f"replay --from needs an empty state directory; {self.config.db_path} "
                f"already holds {self.log.last_seq} events (move it away first)"
            )
        return self.log.import_events(read_export(export))
