"""The event log on real SQLite files: append-only in the database, hash-chained, migrated."""

from __future__ import annotations

import io
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lakehoused.errors import DuplicateEvent, LogError
from lakehoused.log import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ZERO_HASH,
    Event,
    EventLog,
    StoredEvent,
    event_hash,
    migrate,
    read_export,
)


class Counter:
    """A minimal projection: counts events per type, and refuses the type `boom`."""

    def setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS counts (type TEXT PRIMARY KEY, n INTEGER)")
        conn.execute("CREATE TABLE IF NOT EXISTS counter_position (seq INTEGER)")
        if conn.execute("SELECT count(*) FROM counter_position").fetchone()[0] == 0:
            conn.execute("INSERT INTO counter_position VALUES (0)")

    def position(self, conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT seq FROM counter_position").fetchone()[0]

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        conn.execute(
            "INSERT INTO counts VALUES (?, 1) ON CONFLICT (type) DO UPDATE SET n = n + 1",
            (event.type,),
        )
        if event.type == "boom":
            raise LogError("boom refused")
        conn.execute("UPDATE counter_position SET seq = ?", (event.seq,))

    def reset(self, conn: sqlite3.Connection) -> None:
        conn.execute("DROP TABLE IF EXISTS counts")
        conn.execute("DROP TABLE IF EXISTS counter_position")
        self.setup(conn)


def counts(log: EventLog) -> dict[str, int]:
    return dict(log.connection.execute("SELECT type, n FROM counts"))


@pytest.fixture
def make_log(tmp_path: Path):
    opened: list[EventLog] = []

    def make(name: str = "lakehoused.db", projection=None) -> EventLog:
        log = EventLog(tmp_path / "state" / name, projection)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def raw(log: EventLog) -> sqlite3.Connection:
    return sqlite3.connect(log.path, isolation_level=None)


def fill(log: EventLog, n: int) -> list[StoredEvent]:
    return [
        log.append(Event("ingest.rejected", {"i": i, "reason": "x"}, dataset="d")) for i in range(n)
    ]


def test_append_and_read_are_gapless_and_chained(make_log):
    log = make_log()
    stored = fill(log, 5)
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert stored[0].prev_hash == ZERO_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))
    assert log.read() == stored
    assert log.read(after=2, limit=2) == stored[2:4]
    assert log.last_seq == 5
    assert log.last(type="ingest.rejected", dataset="d") == stored[-1]
    assert log.last(type="dataset.registered") is None
    assert log.find(stored[1].id) == stored[1]
    assert stored[0].at.endswith("Z") and len(stored[0].at) == len("2026-11-22T04:35:00.123456Z")
    assert log.verify_chain() == []


def test_read_filters_by_type(make_log):
    log = make_log()
    log.append(Event("a", {}))
    b = log.append(Event("b", {"x": 1}))
    assert log.read(type="b") == [b]


def test_data_is_canonical_and_rounds_trip(make_log):
    log = make_log()
    e = log.append(Event("t", {"b": [1, 2.5, "é"], "a": None}))
    text = raw(log).execute("SELECT data FROM events WHERE seq = 1").fetchone()[0]
    assert text == '{"a":null,"b":[1,2.5,"é"]}'
    assert e.data == {"a": None, "b": [1, 2.5, "é"]}
    with pytest.raises(LogError, match="not plain JSON"):
        log.append(Event("t", {"x": float("nan")}))


def test_duplicate_id_is_refused(make_log):
    log = make_log()
    log.append(Event("t", {}, id="fixed"))
    with pytest.raises(DuplicateEvent, match="seq 1"):
        log.append(Event("t", {"other": True}, id="fixed"))
    assert log.last_seq == 1


def test_failing_projection_rolls_the_event_back(make_log):
    log = make_log(projection=Counter())
    log.append(Event("ok", {}))
    with pytest.raises(LogError, match="boom refused"):
        log.append(Event("boom", {}))
    assert log.last_seq == 1
    assert counts(log) == {"ok": 1}
    log.append(Event("ok", {}))
    assert log.last_seq == 2 and counts(log) == {"ok": 2}


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'forged' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 1",
        "INSERT OR REPLACE INTO events SELECT seq, id, 'forged', dataset, at, data, prev_hash, hash "
        "FROM events WHERE seq = 1",
        "INSERT INTO events SELECT seq, id, 'forged', dataset, at, data, prev_hash, hash "
        "FROM events WHERE seq = 1 ON CONFLICT (seq) DO UPDATE SET type = 'forged'",
        "INSERT INTO events SELECT 5, 'gap', 't', NULL, at, '{}', hash, hash "
        "FROM events WHERE seq = 2",
        "INSERT INTO events VALUES (3, 'badlink', 't', NULL, 'now', '{}', '" + "1" * 64 + "', 'h')",
        "INSERT INTO events (id, type, at, data, prev_hash, hash) SELECT 'noseq', 't', 'now', '{}', "
        "hash, 'h' FROM events WHERE seq = 2",
    ],
    ids=["update", "delete", "insert-or-replace", "upsert", "gap", "wrong-prev-hash", "no-seq"],
)
def test_raw_connection_cannot_rewrite_history(make_log, sql):
    log = make_log()
    fill(log, 2)
    before = raw(log).execute("SELECT * FROM events ORDER BY seq").fetchall()
    conn = raw(log)
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(sql)
    assert raw(log).execute("SELECT * FROM events ORDER BY seq").fetchall() == before
    assert log.verify_chain() == []


def test_raw_connection_may_append_a_correct_link(make_log):
    # The triggers guard history, not the format: a correctly chained row is accepted.
    log = make_log()
    (first,) = fill(log, 1)
    at, data = "2026-01-01T00:00:00.000000Z", "{}"
    h = event_hash(2, "x", "t", None, at, data, first.hash)
    raw(log).execute(
        "INSERT INTO events VALUES (2, 'x', 't', NULL, ?, ?, ?, ?)", (at, data, first.hash, h)
    )
    assert log.verify_chain() == []


def drop_triggers(conn: sqlite3.Connection) -> None:
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")


def test_verify_chain_names_the_tampered_seq(make_log):
    log = make_log()
    fill(log, 5)
    conn = raw(log)
    drop_triggers(conn)
    conn.execute("""UPDATE events SET data = '{"i":99}' WHERE seq = 3""")
    problems = log.verify_chain()
    assert any("seq 3" in p and "hash does not match" in p for p in problems)
    assert any("trigger" in p for p in problems)
    assert not any("seq 4" in p for p in problems)


def test_verify_chain_finds_a_deleted_row_and_a_relinked_row(make_log):
    log = make_log()
    fill(log, 5)
    conn = raw(log)
    drop_triggers(conn)
    conn.execute("DELETE FROM events WHERE seq = 2")
    problems = [p for p in log.verify_chain() if p.startswith("seq")]
    assert any(p.startswith("seq 3: gap") for p in problems)
    assert any(p.startswith("seq 3: prev_hash") for p in problems)

    # Rewriting a row with a fresh, self-consistent hash still breaks the next link.
    row = conn.execute("SELECT * FROM events WHERE seq = 4").fetchone()
    forged = event_hash(4, row[1], "forged", row[3], row[4], row[5], row[6])
    conn.execute("UPDATE events SET type = 'forged', hash = ? WHERE seq = 4", (forged,))
    assert any(p.startswith("seq 5: prev_hash") for p in log.verify_chain())


def test_two_writers_interleave_without_gaps_and_catch_up(make_log):
    a = make_log(projection=Counter())
    b = make_log(projection=Counter())
    for i in range(10):
        (a if i % 2 else b).append(Event("t", {"i": i}))
    assert [e.seq for e in a.read()] == list(range(1, 11))
    assert [e.data["i"] for e in b.read()] == list(range(10))
    assert a.verify_chain() == []
    assert a.catch_up() == 10 and b.catch_up() == 10
    assert counts(a) == counts(b) == {"t": 10}


def test_catch_up_folds_events_appended_without_a_projection(make_log):
    plain = make_log()
    fill(plain, 3)
    folded = make_log(projection=Counter())  # catches up on open
    assert counts(folded) == {"ingest.rejected": 3}
    fill(plain, 2)
    assert folded.catch_up() == 5
    assert counts(folded) == {"ingest.rejected": 5}
    # Appending folds anything still pending first, so the projection sees every event.
    fill(plain, 1)
    folded.append(Event("t", {}))
    assert counts(folded) == {"ingest.rejected": 6, "t": 1}


def test_replay_rebuilds_the_projection(make_log):
    log = make_log(projection=Counter())
    fill(log, 4)
    log.connection.execute("UPDATE counts SET n = 1000")
    log.replay()
    assert counts(log) == {"ingest.rejected": 4}


def test_export_then_import_gives_identical_rows(make_log):
    src = make_log("a.db")
    fill(src, 3)
    src.append(Event("t", {"nested": {"z": 1, "a": [True, None]}, "text": "ünï"}, dataset=None))
    fh = io.StringIO()
    assert src.export(fh) == 4
    dst = make_log("b.db", projection=Counter())
    assert dst.import_events(read_export(io.StringIO(fh.getvalue()))) == 4
    rows = "SELECT * FROM events ORDER BY seq"
    assert raw(dst).execute(rows).fetchall() == raw(src).execute(rows).fetchall()
    assert counts(dst) == {"ingest.rejected": 3, "t": 1}
    assert dst.verify_chain() == []
    with pytest.raises(LogError, match="already holds 4 events"):
        dst.import_events(src.read())


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda e: {**e, "data": {"i": 99}} if e["seq"] == 2 else e, "seq 2: hash"),
        (lambda e: {**e, "prev_hash": "1" * 64} if e["seq"] == 3 else e, "seq 3: prev_hash"),
        (lambda e: None if e["seq"] == 2 else e, "seq 3: expected seq 2"),
    ],
    ids=["data", "link", "gap"],
)
def test_import_rejects_a_tampered_export_naming_the_seq(make_log, tamper, message):
    src = make_log("a.db")
    fill(src, 3)
    events = [tamper(e.to_json()) for e in src.read()]
    dst = make_log("b.db", projection=Counter())
    with pytest.raises(LogError, match=message):
        dst.import_events(StoredEvent.from_json(e) for e in events if e is not None)
    assert dst.last_seq == 0 and counts(dst) == {}


def test_read_export_names_a_bad_line():
    with pytest.raises(LogError, match="line 1"):
        list(read_export(io.StringIO('{"seq": 1}\n')))
    with pytest.raises(LogError, match="line 2"):
        list(read_export(io.StringIO("\nnot json\n")))


def test_fresh_log_is_at_the_current_schema_version(make_log):
    log = make_log()
    assert raw(log).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    assert raw(log).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_log_from_a_newer_lakehoused_is_refused(tmp_path: Path):
    db = tmp_path / "lakehoused.db"
    EventLog(db).close()
    sqlite3.connect(db, isolation_level=None).execute("PRAGMA user_version = 7")
    with pytest.raises(LogError, match="newer lakehoused"):
        EventLog(db)


def test_a_migration_run_against_the_wrong_version_is_refused(tmp_path: Path):
    db = tmp_path / "lakehoused.db"
    EventLog(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(LogError, match="schema version 1, not 0"):
        MIGRATIONS[0](conn)
    conn.execute("ROLLBACK")


def test_migrations_apply_in_order_and_roll_back_on_failure(tmp_path: Path):
    conn = sqlite3.connect(tmp_path / "lakehoused.db", isolation_level=None)

    def add_note(c: sqlite3.Connection) -> None:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 1
        c.execute("CREATE TABLE note (x TEXT)")
        c.execute("PRAGMA user_version = 2")

    def broken(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE half (x TEXT)")
        raise LogError("broken step")

    with pytest.raises(LogError, match="broken step"):
        migrate(conn, {**MIGRATIONS, 1: broken}, latest=2)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    assert migrate(conn, {**MIGRATIONS, 1: add_note}, latest=2) == 2
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'note'").fetchone()[0] == 1
    with pytest.raises(LogError, match="newer lakehoused"):
        migrate(conn)


@pytest.mark.parametrize(
    "keep, sql, message",
    [
        (
            "events_no_overwrite",
            "INSERT OR REPLACE INTO events SELECT seq, id, 'forged', dataset, at, data, "
            "prev_hash, hash FROM events WHERE seq = 2",
            "append-only",
        ),
        (
            "events_no_gap",
            "INSERT INTO events SELECT 9, 'gap', 't', NULL, at, '{}', hash, hash "
            "FROM events WHERE seq = 2",
            "without a gap",
        ),
        (
            "events_chained",
            "INSERT INTO events VALUES (3, 'badlink', 't', NULL, 'now', '{}', 'x', 'h')",
            "prev_hash",
        ),
    ],
    ids=["overwrite", "gap", "chain"],
)
def test_each_insert_guard_holds_on_its_own(make_log, keep, sql, message):
    log = make_log()
    fill(log, 2)
    conn = raw(log)
    for name in ("events_no_overwrite", "events_no_gap", "events_chained"):
        if name != keep:
            conn.execute(f"DROP TRIGGER {name}")
    before = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
    with pytest.raises(sqlite3.DatabaseError, match=message):
        conn.execute(sql)
    assert conn.execute("SELECT * FROM events ORDER BY seq").fetchall() == before


def test_reads_never_wait_for_a_write_in_progress(make_log):
    log = make_log()
    log.append(Event("ingest.rejected", {"n": 1}))
    done = threading.Event()

    def hold_the_writer() -> None:
        # A write in progress, as an fsynced append (or another process's long one) is.
        with log._transaction("hold"):
            log.connection.execute("SELECT 1")
            done.wait(5)

    writer = threading.Thread(target=hold_the_writer)
    writer.start()
    try:
        started = time.monotonic()
        assert [e.seq for e in log.read()] == [1]
        assert log.last_seq == 1
        assert time.monotonic() - started < 1.0
    finally:
        done.set()
        writer.join()


def test_read_only_refuses_a_missing_log_and_every_write(tmp_path, make_log):
    missing = tmp_path / "nowhere" / "lakehoused.db"
    with pytest.raises(LogError, match=r"check state\.path"):
        EventLog(missing, read_only=True)
    assert not missing.parent.exists()  # nothing was created
    log = make_log()
    log.append(Event("ingest.rejected", {"n": 1}))
    reader = EventLog(log.path, read_only=True)
    try:
        assert reader.last_seq == 1
        with pytest.raises(LogError, match="read-only"):
            reader.append(Event("ingest.rejected", {"n": 2}))
    finally:
        reader.close()
