"""What a person does to a dataset, each one event with the reason they give (DESIGN §2, §4).

drop, rollback, retract and widen (retention, which expires old versions, is retention.py).
Each command
is built against the dataset's current version; if an ingest (or another command) gets
there first, the append is refused as a version conflict, and the command looks again and
retries, so neither is lost.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from lakehoused.catalog import DatasetInfo
from lakehoused.errors import LakehousedError, UnknownDataset, VersionConflict
from lakehoused.events import (
    ColumnWidened,
    DatasetDropped,
    DatasetRolledBack,
    LakehouseEvent,
    PartRetracted,
)
from lakehoused.lakehouse import Lakehouse
from lakehoused.log import StoredEvent
from lakehoused.schema import Column, fingerprint, schema_to_json
from lakehoused.store import object_key

_RETRIES = 5
_ROW_GROUP_ROWS = 122_880  # as the converter writes

WIDENINGS: dict[str, tuple[str, ...]] = {
    "BOOLEAN": ("VARCHAR",),
    "BIGINT": ("DECIMAL(38,0)", "DOUBLE", "VARCHAR"),
    "DECIMAL(38,0)": ("DOUBLE", "VARCHAR"),
    "DOUBLE": ("VARCHAR",),
    "DATE": ("TIMESTAMP", "VARCHAR"),
    "TIMESTAMP": ("VARCHAR",),
}
"""The types each type may widen to: every value of the old one has one in the new."""


class CommandRefused(LakehousedError):
    """A dataset command cannot be done as asked; the message says why and what would do."""

    status = 409
    code = "refused"


def _retrying(
    build: Callable[[], LakehouseEvent | None], lakehouse: Lakehouse
) -> StoredEvent | None:
    """Append what `build` makes from the current catalog; rebuild it if the dataset moved on."""
    for _ in range(_RETRIES):
        event = build()
        if event is None:
            return None
        try:
            return lakehouse.log.append(event.to_event())
        except VersionConflict:
            lakehouse.log.catch_up()
    raise CommandRefused("the dataset kept changing under this command; try again")


def _current(lakehouse: Lakehouse, name: str) -> DatasetInfo:
    dataset = lakehouse.catalog.dataset(name)
    if dataset is None:
        raise UnknownDataset(f"no dataset named {name!r}; `lakehoused datasets` lists them")
    return dataset


def _reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise CommandRefused('give a reason (--reason "..."): it is kept in the log')
    return reason


def drop(lakehouse: Lakehouse, name: str, reason: str) -> StoredEvent:
    """Take the dataset out of the catalog; its history (and time travel) stays."""
    reason = _reason(reason)

    def build() -> LakehouseEvent:
        current = _current(lakehouse, name)
        return DatasetDropped(dataset=name, version=current.version + 1, reason=reason)

    return _retrying(build, lakehouse)


def rollback(lakehouse: Lakehouse, name: str, to: int, reason: str) -> StoredEvent:
    """A new version whose objects are version `to`'s."""
    reason = _reason(reason)

    def build() -> LakehouseEvent:
        last = lakehouse.catalog.last_version(name)
        if last == 0:
            raise UnknownDataset(f"no dataset named {name!r}; `lakehoused datasets` lists them")
        found = lakehouse.catalog.at_version(name, to)
        if found is None or found[0].dropped:
            versions = [v.version for v in lakehouse.catalog.versions(name) if not v.dropped]
            raise CommandRefused(
                f"{name} has no version {to} to roll back to; its versions: "
                f"{', '.join(map(str, versions))} (`lakehoused history {name}`)"
            )
        if found[0].expired:
            raise CommandRefused(
                f"version {to} of {name} was expired by retention (seq {found[0].expired_seq}); "
                "its objects may be gone"
            )
        return DatasetRolledBack(dataset=name, version=last + 1, to_version=to, reason=reason)

    return _retrying(build, lakehouse)


def retract(lakehouse: Lakehouse, name: str, part: str, reason: str) -> StoredEvent:
    """Take one part (by object key) out of an append dataset's current version."""
    reason = _reason(reason)

    def build() -> LakehouseEvent:
        current = _current(lakehouse, name)
        if current.mode != "append":
            raise CommandRefused(
                f"{name} is a replace dataset: it has one part; roll it back "
                f"(`lakehoused rollback {name} --to VERSION`) or drop it instead"
            )
        keys = [p.object_key for p in current.parts]
        if part not in keys:
            raise CommandRefused(
                f"{name} has no current part {part!r}; its parts: {', '.join(keys)}"
            )
        return PartRetracted(dataset=name, version=current.version + 1, part=part, reason=reason)

    return _retrying(build, lakehouse)


def widen(lakehouse: Lakehouse, name: str, column: str, to_type: str, reason: str) -> StoredEvent:
    """Rewrite every current part with `column` as `to_type`, as new objects: one event."""
    reason = _reason(reason)
    to_type = to_type.upper()
    while True:
        current = _current(lakehouse, name)
        columns = {c.name: c for c in current.schema}
        if column not in columns:
            raise CommandRefused(
                f"{name} has no column {column!r}; its columns: {', '.join(columns)}"
            )
        from_type = columns[column].type
        if to_type not in WIDENINGS.get(from_type, ()):
            allowed = ", ".join(WIDENINGS.get(from_type, ())) or "nothing"
            raise CommandRefused(
                f"{name}.{column} is {from_type}, which widens to {allowed}, not {to_type}"
            )
        parts = [_rewrite(lakehouse, name, p.object_key, column, from_type, to_type)
                 for p in current.parts]  # fmt: skip
        schema = [Column(c.name, to_type if c.name == column else c.type, c.nullable)
                  for c in current.schema]  # fmt: skip
        event = ColumnWidened(
            dataset=name,
            version=current.version + 1,
            column=column,
            from_type=from_type,
            to_type=to_type,
            parts=parts,
            schema=schema_to_json(schema),
            fingerprint=fingerprint(schema),
            reason=reason,
        )
        try:
            return lakehouse.log.append(event.to_event())
        except VersionConflict:
            lakehouse.log.catch_up()  # a part came in meanwhile: rewrite again, with it


def _rewrite(
    lakehouse: Lakehouse, name: str, key: str, column: str, from_type: str, to_type: str
) -> dict:
    """One part rewritten with the wider column, put as a new object; its event entry."""
    source = lakehouse.cache.path(key)
    col = '"' + column.replace('"', '""') + '"'
    con = duckdb.connect(config={"threads": 2, "memory_limit": "256MB"})
    try:
        con.execute("SET preserve_insertion_order = true")
        read = f"read_parquet('{_escape(str(source))}')"
        if to_type == "DOUBLE":
            # Exact or refused: an integer beyond 2^53 has no double of its own.
            (lost,) = con.execute(
                f"SELECT count(*) FROM {read} WHERE {col} IS NOT NULL AND "
                f"TRY_CAST(CAST({col} AS DOUBLE) AS HUGEINT) IS DISTINCT FROM {col}"
            ).fetchone()
            if lost:
                raise CommandRefused(
                    f"{lost} value(s) of {name}.{column} in {key} have no exact DOUBLE; "
                    f"widen to VARCHAR or DECIMAL(38,0) instead"
                )
        with lakehouse.staging.workspace() as workspace:
            target = workspace.object_path
            con.execute(
                f"COPY (SELECT * REPLACE (CAST({col} AS {to_type}) AS {col}) FROM {read}) "
                f"TO '{_escape(str(target))}' (FORMAT parquet, COMPRESSION snappy, "
                f"ROW_GROUP_SIZE {_ROW_GROUP_ROWS}, USE_TMP_FILE false)"
            )
            sha256, size = workspace.finish_object()
            new_key = object_key(name, sha256)
            lakehouse.cache.writer.put(new_key, target)  # seeds the read-through cache too
            (rows,) = con.execute(f"SELECT count(*) FROM {read}").fetchone()
    finally:
        con.close()
    return {"replaces": key, "key": new_key, "sha256": sha256, "bytes": size, "rows": rows}


def _escape(text: str) -> str:
    return text.replace("'", "''")
