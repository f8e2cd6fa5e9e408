"""Retention: which old versions a dataset lets go, as `dataset.versions_expired` events.

`keep_versions` keeps the newest N versions; `keep_days` keeps versions made in the last D
days; with both, a version goes only when it is beyond the newest N *and* older than D days
(the newest N are kept however old, as Iceberg's `retain_last`). The current version never
expires. `gc` then removes objects no kept version reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from lakehoused.catalog import Catalog, VersionInfo
from lakehoused.config import Config
from lakehoused.errors import VersionConflict
from lakehoused.events import VersionsExpired
from lakehoused.log import EventLog, StoredEvent

_RETRIES = 5


@dataclass(frozen=True)
class Expiry:
    """Versions of one dataset retention lets go, and the rule that does."""

    dataset: str
    versions: list[int]
    reason: str


def due(config: Config, catalog: Catalog, name: str, now: float | None = None) -> Expiry | None:
    """What retention expires in one dataset now (its current version never)."""
    keep = config.retention_for(name)
    if keep.keep_versions is None and keep.keep_days is None:
        return None
    versions = catalog.versions(name)
    if not versions:
        return None
    now = time.time() if now is None else now
    newest_first = list(reversed(versions))
    expired = []
    for rank, version in enumerate(newest_first):
        if rank == 0 or version.expired:
            continue
        beyond_count = keep.keep_versions is not None and rank >= keep.keep_versions
        too_old = keep.keep_days is not None and _age_days(version, now) > keep.keep_days
        if keep.keep_versions is not None and keep.keep_days is not None:
            go = beyond_count and too_old  # both set: the last N are kept however old
        else:
            go = beyond_count or too_old
        if go:
            expired.append(version.version)
    if not expired:
        return None
    rules = []
    if keep.keep_versions is not None:
        rules.append(f"keep_versions = {keep.keep_versions}")
    if keep.keep_days is not None:
        rules.append(f"keep_days = {keep.keep_days:g}")
    return Expiry(name, sorted(expired), "retention: " + ", ".join(rules))


def _age_days(version: VersionInfo, now: float) -> float:
    made = datetime.fromisoformat(version.at.replace("Z", "+00:00")).timestamp()
    return (now - made) / 86400


def expire(
    config: Config, catalog: Catalog, log: EventLog, name: str, now: float | None = None
) -> StoredEvent | None:
    """Apply retention to one dataset: one event naming the versions it expires, if any."""
    for _ in range(_RETRIES):
        found = due(config, catalog, name, now)
        if found is None:
            return None
        event = VersionsExpired(dataset=name, versions=found.versions, reason=found.reason)
        try:
            return log.append(event.to_event())
        except VersionConflict:
            log.catch_up()
    return None  # the dataset keeps changing: the next registration or sweep expires it


def expire_all(
    config: Config, catalog: Catalog, log: EventLog, now: float | None = None
) -> list[StoredEvent]:
    """Apply retention to every dataset the catalog has ever had."""
    found = (expire(config, catalog, log, name, now) for name in catalog.names(dropped=True))
    return [event for event in found if event is not None]
