"""The catalog projection on real SQLite files: folds, exactly-once lookups, replay = live."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehoused.catalog import Catalog, replay_digest
from lakehoused.errors import LogError, VersionConflict
from lakehoused.events import (
    DatasetDropped,
    DatasetRolledBack,
    PartRetracted,
    VersionsExpired,
)
from lakehoused.log import Event, EventLog
from lakehoused.schema import Column, fingerprint, schema_to_json

ID = Column("id", "BIGINT", False)
NAME = Column("name", "VARCHAR")
SCORE = Column("score", "DOUBLE")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def registered(
    dataset: str,
    version: int,
    mode: str = "replace",
    source: str = "a",
    columns: list[Column] | None = None,
    rows: int = 10,
) -> Event:
    """A dataset.registered event shaped the way ingest writes it."""
    columns = columns if columns is not None else [ID, NAME]
    obj = sha(f"{dataset}/{source}/{[c.name for c in columns]}")
    return Event(
        "dataset.registered",
        {
            "dataset": dataset,
            "version": version,
            "mode": mode,
            "object": {
                "key": f"datasets/{dataset}/{obj}.parquet",
                "sha256": obj,
                "bytes": rows * 7,
                "rows": rows,
            },
            "source": {
                "uri": f"inbox/{source}.csv",
                "sha256": sha(source),
                "bytes": rows * 3,
                "mtime": 1.5,
            },
            "schema": schema_to_json(columns),
            "fingerprint": fingerprint(columns),
        },
        dataset=dataset,
    )


def rejected(source: str) -> Event:
    data = {
        "source": {"uri": source, "sha256": sha(source), "bytes": 1, "mtime": 0},
        "reason": "bad",
        "details": {"line": 3},
    }
    return Event("ingest.rejected", data)


def duplicate(dataset: str, version: int, source: str) -> Event:
    data = {
        "source": {"uri": source, "sha256": sha(source), "bytes": 1, "mtime": 0},
        "version": version,
        "object": "k",
    }
    return Event("ingest.duplicate", data, dataset=dataset)


@pytest.fixture
def make_log(tmp_path: Path):
    opened: list[EventLog] = []

    def make() -> tuple[EventLog, Catalog]:
        catalog = Catalog()
        log = EventLog(tmp_path / "state" / "lakehoused.db", catalog)
        opened.append(log)
        return log, catalog

    yield make
    for log in opened:
        log.close()


def test_replace_makes_the_object_the_only_part(make_log):
    log, cat = make_log()
    log.append(registered("workers", 1, source="a", rows=10))
    e2 = log.append(registered("workers", 2, source="b", columns=[ID, SCORE], rows=4))
    info = cat.dataset("workers")
    assert info is not None
    assert (info.version, info.mode, info.rows, info.bytes, info.seq) == (2, "replace", 4, 28, 2)
    assert info.schema == [ID, SCORE] and info.fingerprint == fingerprint([ID, SCORE])
    assert [p.source_sha256 for p in info.parts] == [sha("b")]
    assert info.parts[0].version_added == 2 and info.parts[0].source_mtime == 1.5
    assert info.updated_at == e2.at and info.created_at < e2.at
    assert [(v.version, v.rows, v.event, v.schema) for v in cat.versions("workers")] == [
        (1, 10, "dataset.registered", [ID, NAME]),
        (2, 4, "dataset.registered", [ID, SCORE]),
    ]
    (_, parts) = cat.at_version("workers", 1)
    assert [p.object_key for p in parts] == [
        registered("workers", 1, source="a").data["object"]["key"]
    ]
    assert info.to_json()["schema"] == schema_to_json([ID, SCORE])
    assert cat.versions("nobody") == [] and cat.dataset("nobody") is None


def test_append_adds_parts_and_sums(make_log):
    log, cat = make_log()
    for v, src in enumerate(["a", "b", "c"], start=1):
        log.append(registered("sales", v, mode="append", source=src, rows=v))
    info = cat.dataset("sales")
    assert info is not None
    assert [p.source_uri for p in info.parts] == ["inbox/a.csv", "inbox/b.csv", "inbox/c.csv"]
    assert [p.version_added for p in info.parts] == [1, 2, 3]
    assert (info.rows, info.bytes, info.version) == (6, 42, 3)
    assert [v.rows for v in cat.versions("sales")] == [1, 3, 6]


def test_replace_after_appends_removes_every_part(make_log):
    log, cat = make_log()
    log.append(registered("sales", 1, mode="append", source="a"))
    log.append(registered("sales", 2, mode="append", source="b"))
    log.append(registered("sales", 3, mode="replace", source="c", rows=1))
    info = cat.dataset("sales")
    assert info is not None and [p.source_uri for p in info.parts] == ["inbox/c.csv"]
    assert info.rows == 1
    # Replaced objects are still referenced by the log: gc must keep them.
    assert len(cat.referenced_objects()) == 3


def test_append_with_new_columns_merges_the_schema(make_log):
    log, cat = make_log()
    log.append(registered("sales", 1, mode="append", source="a", columns=[ID, NAME]))
    log.append(registered("sales", 2, mode="append", source="b", columns=[ID, NAME, SCORE]))
    info = cat.dataset("sales")
    assert info is not None
    assert info.schema == [ID, NAME, Column("score", "DOUBLE", True)]
    assert info.fingerprint == fingerprint(info.schema)


def test_find_source_follows_the_exactly_once_rule(make_log):
    log, cat = make_log()
    log.append(registered("workers", 1, source="a"))
    log.append(registered("workers", 2, source="b"))
    assert cat.find_source("workers", sha("a")) is None  # an older file again is a new version
    part = cat.find_source("workers", sha("b"))
    assert part is not None and part.version_added == 2

    log.append(registered("sales", 1, mode="append", source="a"))
    log.append(registered("sales", 2, mode="append", source="b"))
    assert cat.find_source("sales", sha("a")) is not None
    assert cat.find_source("sales", sha("b")) is not None
    assert cat.find_source("sales", sha("c")) is None
    assert cat.find_source("nobody", sha("a")) is None


def test_a_stale_version_conflicts_and_writes_nothing(make_log):
    log, cat = make_log()
    log.append(registered("workers", 1))
    before = cat.digest()
    for stale in (1, 3):
        with pytest.raises(VersionConflict, match="catalog is at version 1"):
            log.append(registered("workers", stale, source="x"))
    with pytest.raises(VersionConflict):
        log.append(registered("fresh", 2))
    assert log.last_seq == 1 and cat.digest() == before


def test_malformed_registration_is_refused(make_log):
    log, _ = make_log()
    with pytest.raises(LogError, match="mode must be"):
        log.append(registered("w", 1, mode="upsert"))
    bad = Event("dataset.registered", {"dataset": "w", "version": 1})
    with pytest.raises(LogError, match="malformed"):
        log.append(bad)
    assert log.last_seq == 0


def test_rejections_duplicates_and_unknown_types_only_advance(make_log):
    log, cat = make_log()
    log.append(registered("w", 1))
    before = cat.datasets()
    log.append(rejected("inbox/bad.csv"))
    log.append(duplicate("w", 1, "a"))
    log.append(Event("dataset.renamed.someday", {"whatever": 1}))
    assert cat.position() == 4 and cat.datasets() == before


def test_datasets_are_sorted_with_their_parts(make_log):
    log, cat = make_log()
    log.append(registered("zeta", 1))
    log.append(registered("alpha", 1, mode="append", source="p"))
    log.append(registered("alpha", 2, mode="append", source="q"))
    names = [(d.name, len(d.parts)) for d in cat.datasets()]
    assert names == [("alpha", 2), ("zeta", 1)]
    assert [d.to_json()["name"] for d in cat.datasets()] == ["alpha", "zeta"]


def test_open_catches_up_events_another_writer_appended(make_log):
    log_a, cat_a = make_log()
    log_b, cat_b = make_log()
    log_a.append(registered("w", 1))
    log_b.append(registered("w", 2, source="b"))  # b folds a's event first, in its transaction
    log_a.append(registered("w", 3, source="c"))
    assert log_b.catch_up() == 3
    assert cat_a.digest() == cat_b.digest()
    _, cat_c = make_log()
    assert cat_c.position() == 3 and cat_c.dataset("w").version == 3  # type: ignore[union-attr]


def test_dropped_projection_tables_are_rebuilt_on_open(make_log, tmp_path: Path):
    log, cat = make_log()
    log.append(registered("w", 1))
    log.append(registered("s", 1, mode="append"))
    log.append(rejected("x"))
    live = cat.digest()
    log.close()
    conn = sqlite3.connect(tmp_path / "state" / "lakehoused.db", isolation_level=None)
    for table in ("catalog_parts", "catalog_versions", "catalog_datasets", "catalog_position"):
        conn.execute(f"DROP TABLE {table}")
    _, cat2 = make_log()
    assert cat2.digest() == live


def test_partly_dropped_projection_is_rebuilt_from_zero(make_log, tmp_path: Path):
    log, cat = make_log()
    log.append(registered("w", 1))
    live = cat.digest()
    log.close()
    sqlite3.connect(tmp_path / "state" / "lakehoused.db").execute("DROP TABLE catalog_parts")
    _, cat2 = make_log()
    assert cat2.digest() == live


def test_replay_gives_the_same_digest(make_log):
    log, cat = make_log()
    log.append(registered("w", 1))
    log.append(registered("w", 2, source="b"))
    log.append(registered("s", 1, mode="append"))
    live = cat.digest()
    log.connection.execute("UPDATE catalog_datasets SET rows = 0")
    assert cat.digest() != live
    log.replay()
    assert cat.digest() == live == replay_digest(log.read())


# --- the law: replay equals the incremental projection ------------------------------------

DATASETS = ("alpha", "beta", "gamma")
COLUMN_SETS = ([ID], [ID, NAME], [ID, NAME, SCORE])

actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("register"),
            st.sampled_from(DATASETS),
            st.sampled_from(("replace", "append")),
            st.sampled_from("abcde"),
            st.integers(0, len(COLUMN_SETS) - 1),
            st.integers(0, 1000),
        ),
        st.tuples(st.just("reject"), st.sampled_from("abcde")),
        st.tuples(st.just("duplicate"), st.sampled_from(DATASETS), st.sampled_from("abcde")),
        st.tuples(st.just("drop"), st.sampled_from(DATASETS)),
        st.tuples(st.just("rollback"), st.sampled_from(DATASETS), st.integers(1, 8)),
        st.tuples(st.just("retract"), st.sampled_from(DATASETS), st.integers(0, 5)),
        st.tuples(st.just("expire"), st.sampled_from(DATASETS), st.integers(1, 8)),
    ),
    max_size=30,
)


def _command(log: EventLog, catalog: Catalog, step: tuple) -> bool:
    """Append the command a step asks for, if the catalog allows it; whether it did."""
    kind, name = step[0], step[1]
    info = catalog.dataset(name)
    last = catalog.last_version(name)
    if kind == "drop" and info is not None:
        event = DatasetDropped(dataset=name, version=last + 1, reason="test")
    elif kind == "rollback" and last:
        found = catalog.at_version(name, step[2])
        if found is None or found[0].dropped:
            return False
        event = DatasetRolledBack(dataset=name, version=last + 1, to_version=step[2], reason="t")
    elif kind == "retract" and info is not None and info.mode == "append" and info.parts:
        part = info.parts[step[2] % len(info.parts)].object_key
        event = PartRetracted(dataset=name, version=last + 1, part=part, reason="test")
    elif kind == "expire" and last > 1:
        old = [v.version for v in catalog.versions(name) if v.version < last][: step[2]]
        event = VersionsExpired(dataset=name, versions=old, reason="test")
    else:
        return False
    log.append(event.to_event())
    return True


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_incremental_projection_equals_replay(steps):
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Catalog()
        log = EventLog(Path(tmp) / "lakehoused.db", catalog)
        try:
            appended = 0
            for step in steps:
                if step[0] == "register":
                    _, name, mode, source, cols, rows = step
                    version = catalog.last_version(name) + 1
                    log.append(
                        registered(name, version, mode, source, list(COLUMN_SETS[cols]), rows)
                    )
                elif step[0] == "reject":
                    log.append(rejected(step[1]))
                elif step[0] == "duplicate":
                    log.append(duplicate(step[1], catalog.last_version(step[1]), step[2]))
                elif not _command(log, catalog, step):
                    continue
                appended += 1
            live = catalog.digest()
            assert catalog.position() == log.last_seq == appended
            assert live == replay_digest(log.read())
            log.replay()
            assert catalog.digest() == live
            for info in catalog.datasets():
                assert info.rows == sum(p.rows for p in info.parts)
                assert info.version == catalog.last_version(info.name)
                if info.mode == "replace":
                    assert len(info.parts) <= 1
            referenced = catalog.referenced_objects()
            for info in catalog.datasets():
                assert {p.object_key for p in info.parts} <= referenced.keys()
        finally:
            log.close()


def test_reads_from_another_thread_while_appending(make_log):
    # The server reads the catalog from threads, each on a read-only connection of its own.
    log, cat = make_log()
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                for info in cat.datasets():
                    assert info.rows == sum(p.rows for p in info.parts)
                cat.digest()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for v in range(1, 31):
            log.append(registered("sales", v, mode="append", source=str(v), rows=v))
    finally:
        done.set()
        thread.join()
    assert errors == []
    assert cat.dataset("sales").rows == sum(range(31))  # type: ignore[union-attr]
