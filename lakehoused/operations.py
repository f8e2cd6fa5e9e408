"""Operations on a whole lakehouse: verify, garbage-collect, replay, restore (DESIGN §4, §5)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

from lakehoused import retention
from lakehoused.catalog import replay_digest
from lakehoused.errors import LakehousedError
from lakehoused.lakehouse import Lakehouse
from lakehoused.log import read_export
from lakehoused.retention import Expiry
from lakehoused.store import OBJECTS_PREFIX, object_sha256

GC_GRACE_S = 15 * 60
"""An unreferenced object or stale workspace younger than this may belong to an ingest."""


@dataclass
class GcReport:
    """What `gc` removed (or would remove, with --dry-run)."""

    objects: list[str] = field(default_factory=list)
    workspaces: list[str] = field(default_factory=list)
    expired: list[Expiry] = field(default_factory=list)
    skipped_in_flight: int = 0


def verify(lakehouse: Lakehouse) -> list[str]:
    """Every fault found: hash chain, seq gaps, replay vs projection, objects' sha256."""
    log, catalog, store = lakehouse.log, lakehouse.catalog, lakehouse.store
    log.catch_up()
    # One state for the chain, the replay and the projection: a writer appending meanwhile
    # (the daemon beside this command) must not look like a projection gone wrong.
    with log.snapshot():
        problems = list(log.verify_chain())
        replayed, live = replay_digest(log.events()), catalog.digest()
        referenced = catalog.referenced_objects()
    if replayed != live:
        problems.append(f"projection digest {live[:12]} differs from replay {replayed[:12]}")
    for key, sha256 in sorted(referenced.items()):
        info = store.stat(key)
        if info is None:
            problems.append(f"object {key} is missing from {store.url}")
        elif (actual := object_sha256(store, key)) != sha256:
            problems.append(f"object {key} holds bytes with sha256 {actual}, not {sha256}")
    return problems


def gc(lakehouse: Lakehouse, *, dry_run: bool = False, grace_s: float = GC_GRACE_S) -> GcReport:
    """Expire versions by retention; remove objects no kept version references, and
    workspaces a crash left behind.

    Never an object younger than `grace_s`, and none at all while an ingest is between
    putting its object and appending its event (delta-rs #3645: a VACUUM that raced a
    writer deleted committed data). With `dry_run`, nothing at all is removed.
    """
    report = GcReport()
    lakehouse.log.catch_up()
    # Retention first: what it expires is then no longer referenced (a dry run only says).
    for name in lakehouse.catalog.names(dropped=True):
        found = retention.due(lakehouse.config, lakehouse.catalog, name)
        if found is not None:
            report.expired.append(found)
            if not dry_run:
                retention.expire(lakehouse.config, lakehouse.catalog, lakehouse.log, name)
    referenced = lakehouse.catalog.referenced_objects()
    store = lakehouse.store
    for key in store.keys(OBJECTS_PREFIX):
        if key in referenced:
            continue
        info = store.stat(key)
        if info is None or time.time() - info.modified < grace_s:
            continue  # young, or reused just now by an ingest (a put of an existing key)
        # Looked at right before each delete, not once: an ingest may start meanwhile and
        # be about to reference an old object again.
        if lakehouse.staging.in_flight():
            report.skipped_in_flight += 1
            continue
        report.objects.append(key)
        if not dry_run:
            store.delete(key)
    report.workspaces = lakehouse.staging.remove_stale(grace_s, dry_run=dry_run)
    return report


def replay(lakehouse: Lakehouse) -> str:
    """Rebuild the projection from the log alone; return its digest."""
    lakehouse.log.replay()
    return lakehouse.catalog.digest()


def restore(lakehouse: Lakehouse, export: TextIO) -> int:
    """Fill an empty log from a `log export` file (JSON Lines); return the events read."""
    log = lakehouse.log
    if log.last_seq:
        raise LakehousedError(
            f"replay --from needs an empty state directory; {log.path} "
            f"already holds {log.last_seq} events (move it away first)"
        )
    return log.import_events(read_export(export))
