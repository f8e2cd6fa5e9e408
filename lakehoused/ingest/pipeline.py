"""The ingest of one staged source, steps 1-3 of DESIGN §5, in the one process that writes.

1. convert the staged copy to a Parquet file in the ingest's workspace (a converter
   process for the daemon, this process for `lakehoused ingest`), fsync it
2. put the object under its content address       (crash: an orphan object, `gc` removes it)
3. append the event + update the projection       (one transaction: both or neither)

Staging (step 0) happened before; refreshing the views, archiving the source and removing
the workspace (steps 4-6) come after, in the daemon. A converter only reads and writes files
and returns plain data: the event is built and appended here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lakehoused import faults, names
from lakehoused.catalog import Catalog, DatasetInfo
from lakehoused.catalog.model import schema_diff
from lakehoused.config import Config
from lakehoused.errors import (
    DuplicateEvent,
    RejectedFile,
    SourceChanged,
    VersionConflict,
)
from lakehoused.events import DatasetRegistered, IngestDuplicate, IngestRejected, SchemaChanged
from lakehoused.inbox.base import StagedSource
from lakehoused.ingest import REJECTED_ROWS_COLUMNS, REJECTED_ROWS_SUFFIX, CsvFormat, format_for
from lakehoused.ingest.convert import Conversion, convert
from lakehoused.ingest.staging import Workspace, finish
from lakehoused.log import Event, EventLog, StoredEvent
from lakehoused.schema import Column, fingerprint, merge, schema_to_json
from lakehoused.store import ObjectStore, object_key

_RETRIES = 5  # another writer moved the dataset on meanwhile: look again, convert again

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Route:
    """Which dataset a source feeds, and how (DESIGN §2)."""

    dataset: str
    mode: str
    by_location: bool = False  # the mode comes from where the file was dropped, not a setting


@dataclass(frozen=True)
class ConvertJob:
    """One conversion, as plain data: what crosses to a converter process."""

    source: Path  # the staged copy
    target: Path  # the Parquet file to write
    name: str  # the source's name, for messages and fault points
    fmt: CsvFormat
    dataset: str
    hints: dict[str, str] = field(default_factory=dict)
    existing: list[Column] | None = None
    on_schema_change: str = "reject"
    mode: str = "replace"
    existing_classes: dict[str, int] = field(default_factory=dict)
    rejects: Path | None = None  # where bad records go, with on_bad_rows = "quarantine"


@dataclass(frozen=True)
class Converted:
    """What a conversion returns: the Parquet file's columns and rows, and its hash."""

    conversion: Conversion
    sha256: str
    bytes: int
    rejects: tuple[str, int] | None = None  # (sha256, bytes) of the bad records' file


def run_job(job: ConvertJob, progress: Progress | None = None) -> Converted:
    """Convert, fsync and hash: the whole of step 1, wherever it runs."""
    faults.point("pause_convert", job.name)
    conversion = convert(
        job.source,
        job.target,
        job.fmt,
        dataset=job.dataset,
        hints=job.hints,
        existing=job.existing,
        on_schema_change=job.on_schema_change,
        mode=job.mode,
        existing_classes=job.existing_classes,
        progress=progress,
        rejects_target=job.rejects,
    )
    sha256, size = finish(job.target)
    rejects = finish(conversion.rejects) if conversion.rejects is not None else None
    faults.point("crash_after_convert", job.name)
    return Converted(conversion, sha256, size, rejects)


Converter = Callable[[ConvertJob], Converted]
"""Runs a job: inline (the CLI) or in a converter process (the daemon)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one source: registered, duplicate or rejected, and its event."""

    status: str  # "registered" | "duplicate" | "rejected"
    name: str
    dataset: str | None
    event: StoredEvent
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file ended registered or as a harmless duplicate."""
        return self.status != "rejected"

    @property
    def seq(self) -> int:
        """The seq of its event."""
        return self.event.seq


class Ingestor:
    """Ingests staged sources into the log, the catalog and the store, exactly once."""

    def __init__(self, config: Config, log: EventLog, catalog: Catalog, store: ObjectStore):
        self.config = config
        self.log = log
        self.catalog = catalog
        self.store = store

    def route(
        self, name: str | PurePosixPath, dataset: str | None = None, mode: str | None = None
    ) -> Route:
        """The dataset and mode of a source named `name` (relative to the inbox root).

        An explicit `dataset` wins over the name. The mode is, first of all, an explicit
        `mode`, then the dataset's setting; with `dataset` given, the dataset's own mode
        (replace for a new one); else the file's place in the inbox (DESIGN §2). RejectedFile
        if it has no dataset.
        """
        if dataset is not None:
            if names.accepted_suffix(PurePosixPath(name).name) is None:
                names.locate(PurePosixPath(name).name)  # raises: only CSV/TSV are ingested
            chosen = names.normalise_dataset_name(dataset)
            current = self.catalog.dataset(chosen)
            by_location, implied = False, current.mode if current else names.REPLACE
        else:
            entry = names.locate(name)
            chosen, by_location, implied = entry.dataset, True, entry.mode
        chosen_mode = mode or self.config.dataset_options(chosen).mode
        if chosen_mode is not None:
            return Route(chosen, chosen_mode)
        return Route(chosen, implied, by_location=by_location)

    def ingest(
        self,
        staged: StagedSource,
        workspace: Workspace,
        convert_with: Converter,
        *,
        dataset: str | None = None,
        mode: str | None = None,
    ) -> Outcome:
        """Register a staged source exactly once, or record why it was rejected.

        Raises only what is not the file's fault: a Transient (the caller retries the file
        later) or a LogError (the log cannot be written: the daemon is broken).
        """
        name = staged.source.name.as_posix()
        try:
            route = self.route(name, dataset, mode)
            dataset = route.dataset
            for _ in range(_RETRIES):
                try:
                    return self._register(staged, workspace, route, convert_with)
                except (VersionConflict, DuplicateEvent):
                    self.log.catch_up()  # another writer got there first: look again
            raise SourceChanged(f"dataset {dataset} kept changing under this ingest")
        except RejectedFile as e:
            return self.reject(staged, dataset, e)

    def reject(self, staged: StagedSource, dataset: str | None, error: RejectedFile) -> Outcome:
        """Record that a source was rejected, and why (the ingest.rejected event)."""
        event = self.log.append(
            IngestRejected(
                source=staged.facts(), reason=error.reason, details=error.details, dataset=dataset
            ).to_event()
        )
        return Outcome("rejected", staged.source.name.as_posix(), dataset, event, error.reason)

    def job(
        self,
        staged: StagedSource,
        workspace: Workspace,
        route: Route,
        current: DatasetInfo | None,
    ) -> ConvertJob:
        """The conversion a source needs, given the dataset as it is (`current`)."""
        options = self.config.dataset_options(route.dataset)
        name = staged.source.name.as_posix()
        # A new file for every attempt: an earlier attempt's object may be linked into the
        # store (or its cache) already, and writing over that inode would change it.
        for earlier in (workspace.object_path, workspace.rejects_path):
            earlier.unlink(missing_ok=True)
        return ConvertJob(
            source=staged.path,
            target=workspace.object_path,
            name=name,
            fmt=format_for(options, name),
            dataset=route.dataset,
            hints=dict(options.types),
            existing=current.schema if current else None,
            on_schema_change=options.on_schema_change,
            mode=route.mode,
            existing_classes=dict(current.classes) if current else {},
            rejects=workspace.rejects_path if options.on_bad_rows == "quarantine" else None,
        )

    def _register(
        self, staged: StagedSource, workspace: Workspace, route: Route, convert_with: Converter
    ) -> Outcome:
        name = staged.source.name.as_posix()
        # One state for every decision, and the version the event claims is built on it: if
        # another writer moves the dataset on meanwhile, the append is refused (a version
        # conflict) and all is decided again.
        current, last_version, known = self.catalog.for_ingest(route.dataset, staged.sha256)
        version = last_version + 1
        if current is not None and route.by_location and current.mode != route.mode:
            raise RejectedFile(_mode_mismatch(name, route, current.mode, len(current.parts)))
        if known is not None:
            # Same bytes as what the dataset already holds: the crash-after-append case too.
            event = self.log.append(
                IngestDuplicate(
                    source=staged.facts(),
                    version=current.version if current else 0,
                    object=known.object_key,
                    dataset=route.dataset,
                ).to_event()
            )
            return Outcome("duplicate", name, route.dataset, event)

        job = self.job(staged, workspace, route, current)
        still = staged.still or _still(staged.path)
        converted = convert_with(job) if _still(staged.path) == still else None
        if converted is None or _still(staged.path) != still:
            # A writer changed the file in place after staging (the staged copy is a hard
            # link): what was converted may not be what was hashed.
            raise SourceChanged(f"{name} changed while it was being ingested")
        key = object_key(route.dataset, converted.sha256)
        self.store.put(key, job.target)
        faults.point("crash_after_put", name)
        conversion = converted.conversion
        events = []
        if converted.rejects is not None and job.rejects is not None:
            events += self._rejected_rows(staged, route, job.rejects, converted)
        if current is not None:
            after = conversion.columns
            if route.mode == names.APPEND:
                after = merge(current.schema, conversion.columns)
            diff = schema_diff(current.schema, after)
            if any(diff.values()):
                setting = self.config.dataset_options(route.dataset).on_schema_change
                events.append(
                    SchemaChanged(
                        dataset=route.dataset,
                        version=version,
                        before=schema_to_json(current.schema),
                        after=schema_to_json(after),
                        setting=f'on_schema_change = "{setting}"',
                        **diff,
                    ).to_event()
                )
        events.append(
            DatasetRegistered(
                dataset=route.dataset,
                version=version,
                mode=route.mode,
                object={
                    "key": key,
                    "sha256": converted.sha256,
                    "bytes": converted.bytes,
                    "rows": conversion.rows,
                },
                source=staged.facts(),
                schema=schema_to_json(conversion.columns),
                fingerprint=fingerprint(conversion.columns),
                classes=dict(conversion.classes) or None,
                dialect=conversion.dialect or None,
                rejected_rows=conversion.rejected_rows,
            ).to_event()
        )
        event = self.log.append_all(events)[-1]
        faults.point("crash_after_append", name)
        return Outcome("registered", name, route.dataset, event)

    def _rejected_rows(
        self, staged: StagedSource, route: Route, path: Path, converted: Converted
    ) -> list[Event]:
        """The registration of a file's bad records in `<dataset>__rejected_rows`, if it is
        not there yet; appended in the same transaction as the file's own registration."""
        companion = route.dataset + REJECTED_ROWS_SUFFIX
        if not names.is_valid_dataset_name(companion):
            raise RejectedFile(
                f"dataset {route.dataset} is too long to keep bad rows beside it in "
                f"{companion} (63 characters at most): rename the file or folder, or remove "
                f"datasets.{route.dataset}.on_bad_rows"
            )
        if self.catalog.find_source(companion, staged.sha256) is not None:
            return []  # registered before, with a version of this file's own that failed
        assert converted.rejects is not None
        sha256, size = converted.rejects
        key = object_key(companion, sha256)
        self.store.put(key, path)
        columns = list(REJECTED_ROWS_COLUMNS)
        return [
            DatasetRegistered(
                dataset=companion,
                version=self.catalog.last_version(companion) + 1,
                mode=names.APPEND,
                object={
                    "key": key,
                    "sha256": sha256,
                    "bytes": size,
                    "rows": converted.conversion.rejected_rows,
                },
                source=staged.facts(),
                schema=schema_to_json(columns),
                fingerprint=fingerprint(columns),
                dialect=converted.conversion.dialect or None,
            ).to_event()
        ]


def _mode_mismatch(name: str, route: Route, mode: str, parts: int) -> str:
    """Why a file's place does not fit its dataset's mode, and the two ways to go on."""
    dataset = route.dataset
    if mode == names.APPEND:
        return (
            f"{name} is a top-level file, which would replace dataset {dataset}, but "
            f"{dataset} is an append dataset ({parts} parts, dropped into inbox/{dataset}/); "
            f"move it into inbox/{dataset}/ to add it as one more part, or set "
            f'datasets.{dataset}.mode = "replace" to make it the whole dataset'
        )
    return (
        f"{name} would be added as a part of dataset {dataset}, but {dataset} is a replace "
        f"dataset (each top-level {dataset}.csv replaces it); drop it as inbox/{dataset}.csv "
        f'to replace the dataset, or set datasets.{dataset}.mode = "append" to add it as a part'
    )


def _still(path: Path) -> tuple[int, int]:
    """What tells whether a staged copy changed: (size, mtime_ns)."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns
