"""The lakehouse: log, catalog, store, staging and query engine, opened together.

A thin wiring layer: each stage of the flow lives in its own module (ingest/pipeline.py
ingests, operations.py verifies and collects garbage, query.py answers SQL); this opens
them on one state directory and store, for the daemon and for every CLI command.
"""

from __future__ import annotations

import os
import time
from pathlib import Path, PurePosixPath

from lakehoused import retention
from lakehoused.catalog import Catalog, Part
from lakehoused.config import Config, size_bytes
from lakehoused.errors import LakehousedError, SourceGone
from lakehoused.inbox import SourceFile
from lakehoused.inbox.local import staged_source
from lakehoused.ingest.pipeline import Ingestor, Outcome, Progress, run_job
from lakehoused.ingest.staging import Staging
from lakehoused.log import EventLog
from lakehoused.query import QueryEngine, ViewSpec
from lakehoused.schema import Column
from lakehoused.search import EventSearch, Projections
from lakehoused.store import ObjectStore, open_store
from lakehoused.store.cache import ObjectCache, open_cache


class Lakehouse:
    """One state directory and object store, opened for reading (`read_only`) or writing."""

    def __init__(
        self,
        config: Config,
        *,
        read_only: bool = False,
        store: ObjectStore | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.config = config
        self.read_only = read_only
        self.catalog = Catalog()
        self.search = EventSearch()  # the events' text, searchable (GET /events?q=)
        self.log = EventLog(
            config.db_path,
            projection=Projections(self.catalog, self.search),
            read_only=read_only,
            busy_timeout_s=busy_timeout_s,
        )
        try:
            self.store: ObjectStore = store or open_store(config.store, read_only=read_only)
            self.cache: ObjectCache = open_cache(
                self.store,
                config.cache_path,
                capacity=config.store.cache_size_bytes,
                grace_s=config.server.query_timeout_s + 5,
                evicts=not read_only,
            )
            self.ingestor = Ingestor(config, self.log, self.catalog, self.cache.writer)
            self._staging: Staging | None = None
            self._view_objects: dict[str, list[str]] = {}  # dataset -> the keys its view reads
        except BaseException:
            self.log.close()
            raise

    @property
    def staging(self) -> Staging:
        """The staging area (made on first use, so read-only commands create nothing)."""
        if self._staging is None:
            self._staging = Staging(self.config.staging_path)
        return self._staging

    def close(self) -> None:
        """Close the log."""
        self.log.close()

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest, one-shot -----------------------------------------------------------------

    def source_name(self, path: Path) -> PurePosixPath:
        """A file's name for routing: its path under the inbox if it is inside, else its name."""
        inbox = self.config.inbox.path
        if inbox is not None:
            try:
                return PurePosixPath(Path(os.path.abspath(path)).relative_to(inbox).as_posix())
            except ValueError:
                pass
        return PurePosixPath(Path(path).name)

    def ingest_file(
        self,
        path: Path,
        *,
        dataset: str | None = None,
        mode: str | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """`lakehoused ingest`: stage one local file and ingest it in this process.

        The same steps as the daemon's, with the conversion run here; the file itself is
        left where it is.
        """
        path = Path(path)
        name = self.source_name(path)
        with self.staging.workspace() as workspace:
            try:
                staged = staged_source(
                    SourceFile(name, time.time()),
                    path,
                    workspace.source_path(name.name),
                    Path(os.path.abspath(path)).as_uri(),
                )
            except SourceGone as e:
                raise LakehousedError(f"{path}: {e}") from None
            outcome = self.ingestor.ingest(
                staged,
                workspace,
                lambda job: run_job(job, progress),
                dataset=dataset,
                mode=mode,
            )
        self.after_registration(outcome)
        return outcome

    def after_registration(self, outcome: Outcome) -> None:
        """A new version may push an old one out of its dataset's retention."""
        if outcome.status == "registered" and outcome.dataset is not None:
            retention.expire(self.config, self.catalog, self.log, outcome.dataset)

    # -- queries --------------------------------------------------------------------------

    def view_state(self, after: int = -1) -> tuple[int, dict[str, ViewSpec], list[str]]:
        """The catalog's position, the datasets changed after seq `after` as the query engine
        sees them (every dataset by default), and those dropped since, at one state."""
        seq, datasets, dropped = self.catalog.changes_since(after)
        # The objects every current view reads, kept in step with the changes: a remote
        # store's cache fetches what is new, and never evicts what a view reads.
        if after < 0:
            self._view_objects = {}
        for name in dropped:
            self._view_objects.pop(name, None)
        for d in datasets:
            self._view_objects[d.name] = [p.object_key for p in d.parts]
        self.cache.fill(key for keys in self._view_objects.values() for key in keys)
        return seq, {d.name: self.view_spec(d.schema, d.parts, d.bytes) for d in datasets}, dropped

    def view_spec(self, schema: list[Column], parts: list[Part], size: int) -> ViewSpec:
        """What the engine needs to read one dataset (at one version)."""
        return ViewSpec(schema, [self.cache.path(p.object_key) for p in parts], size)

    def open_engine(self) -> QueryEngine:
        """A sandboxed query engine with one view per dataset, at the catalog's position."""
        seq, specs, _ = self.view_state()
        return self.new_engine(specs, seq)

    def new_engine(
        self,
        specs: dict[str, ViewSpec],
        seq: int,
        *,
        memory_cache: bool = True,
        share: int = 1,
    ) -> QueryEngine:
        """A sandboxed query engine showing `specs` as the catalog state `seq`, with a
        `share`-th of server.memory_limit (engines of past states share it)."""
        server = self.config.server
        limit = server.memory_limit
        if share > 1:
            limit = f"{max(size_bytes(limit) // share, 64 << 20)}B"
        engine = QueryEngine(
            self.cache.root,
            memory_limit=limit,
            timeout_s=server.query_timeout_s,
            cache_bytes=server.memory_cache_bytes if memory_cache else 0,
            result_cache_bytes=server.result_cache_bytes,
        )
        engine.sync(specs, seq)
        return engine
