"""The ingest of whole files through log, catalog and store: DESIGN §2, §4, §5."""

from __future__ import annotations

import os
import sqlite3

from lakehoused import operations
from lakehoused.config import load_config
from lakehoused.lakehouse import Lakehouse
from lakehoused.store import OBJECTS_PREFIX
from tests.helpers import query


def inbox_file(lh: Lakehouse, relpath: str, text: str):
    path = lh.config.inbox.path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_top_level_file_replaces_and_versions_count(lakehouse):
    lh = lakehouse()
    first = lh.ingest_file(inbox_file(lh, "workers.csv", "id,name\n1,a\n2,b\n"))
    assert (first.status, first.dataset, first.event.data["version"]) == (
        "registered",
        "workers",
        1,
    )
    second = lh.ingest_file(inbox_file(lh, "workers.csv", "id,name\n3,c\n"))
    assert second.event.data["version"] == 2
    assert second.event.data["mode"] == "replace"
    assert query(lh, "SELECT id, name FROM workers") == [(3, "c")]
    assert [v.version for v in lh.catalog.versions("workers")] == [1, 2]


def test_sub_folder_files_append_as_parts(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "sales/2026-11-01.csv", "day,amount\n1,10\n"))
    out = lh.ingest_file(inbox_file(lh, "sales/2026-11-02.csv", "day,amount\n2,20\n"))
    assert (out.dataset, out.event.data["mode"], out.event.data["version"]) == (
        "sales",
        "append",
        2,
    )
    dataset = lh.catalog.dataset("sales")
    assert (dataset.rows, len(dataset.parts)) == (2, 2)
    assert query(lh, "SELECT sum(amount) FROM sales") == [(30,)]


def test_config_mode_overrides_location(lakehouse):
    lh = lakehouse(datasets='[datasets.events]\nmode = "append"')
    lh.ingest_file(inbox_file(lh, "events.csv", "n\n1\n"))
    lh.ingest_file(inbox_file(lh, "events.csv", "n\n2\n"))
    assert query(lh, "SELECT count(*) FROM events") == [(2,)]


def test_same_bytes_again_is_a_duplicate_noop(lakehouse):
    lh = lakehouse()
    path = inbox_file(lh, "workers.csv", "id\n1\n")
    lh.ingest_file(path)
    again = lh.ingest_file(path)
    assert again.status == "duplicate"
    assert again.event.type == "ingest.duplicate"
    assert lh.catalog.dataset("workers").version == 1
    registered = lh.log.read(type="dataset.registered")
    assert len(registered) == 1


def test_append_duplicate_is_any_current_part(lakehouse):
    lh = lakehouse()
    a = inbox_file(lh, "sales/a.csv", "n\n1\n")
    lh.ingest_file(a)
    lh.ingest_file(inbox_file(lh, "sales/b.csv", "n\n2\n"))
    assert lh.ingest_file(a).status == "duplicate"
    assert lh.catalog.dataset("sales").rows == 2


def test_older_file_again_is_a_new_version_reusing_its_object(lakehouse):
    lh = lakehouse()
    old = lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n2\n"))
    back = lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    assert back.status == "registered"
    assert back.event.data["version"] == 3
    assert back.event.data["object"]["key"] == old.event.data["object"]["key"]
    assert len(list(lh.store.keys(OBJECTS_PREFIX))) == 2


def test_schema_change_is_rejected_by_default_and_explains_itself(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "id,amount\n1,1.5\n"))
    out = lh.ingest_file(inbox_file(lh, "w.csv", "id,amount,extra\n2,2.5,x\n"))
    assert out.status == "rejected"
    assert out.event.type == "ingest.rejected"
    assert "add_columns" in out.reason
    assert out.event.data["details"] == {"column": "extra"}
    assert lh.catalog.dataset("w").version == 1


def test_add_columns_lets_new_columns_in_and_old_parts_read_null(lakehouse):
    lh = lakehouse(datasets='[datasets.sales]\non_schema_change = "add_columns"')
    lh.ingest_file(inbox_file(lh, "sales/a.csv", "n\n1\n"))
    lh.ingest_file(inbox_file(lh, "sales/b.csv", "n,note\n2,hi\n"))
    schema = [(c.name, c.type) for c in lh.catalog.dataset("sales").schema]
    assert schema == [("n", "BIGINT"), ("note", "VARCHAR")]
    assert query(lh, "SELECT n, note FROM sales ORDER BY n") == [(1, None), (2, "hi")]


def test_a_part_with_narrower_values_keeps_the_dataset_type(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "sales/a.csv", "rating\n4.5\n"))
    out = lh.ingest_file(inbox_file(lh, "sales/b.csv", "rating\n3\n"))
    assert out.status == "registered"
    assert query(lh, "SELECT any_value(typeof(rating)), sum(rating) FROM sales") == [
        ("DOUBLE", 7.5)
    ]


def test_rejections_record_actionable_reasons_and_leave_nothing(lakehouse):
    lh = lakehouse()
    out = lh.ingest_file(inbox_file(lh, "bad.csv", "a,b\n1,2\n3,4,5\n"))
    assert out.status == "rejected"
    assert out.reason.startswith("line 3: expected 2 fields, got 3")
    assert out.event.data["details"] == {"line": 3}
    assert out.event.data["source"]["sha256"]
    assert list(lh.store.keys(OBJECTS_PREFIX)) == []
    assert list(lh.staging.root.iterdir()) == []  # no staged copy, no partial Parquet
    assert lh.catalog.dataset("bad") is None


def test_invalid_dataset_name_and_suffix_are_rejected(lakehouse):
    lh = lakehouse()
    long_name = "x" * 70 + ".csv"
    assert "not a valid dataset name" in lh.ingest_file(inbox_file(lh, long_name, "a\n1\n")).reason
    assert ".csv" in lh.ingest_file(inbox_file(lh, "report.xlsx", "a\n1\n")).reason


def test_type_hints_and_null_values_from_config(lakehouse):
    lh = lakehouse(datasets='[datasets.w]\nnull_values = ["N/A"]\ntypes = { zip = "VARCHAR" }')
    lh.ingest_file(inbox_file(lh, "w.csv", "zip,bonus\n12345,1.5\n54321,N/A\n"))
    types = {c.name: c.type for c in lh.catalog.dataset("w").schema}
    assert types == {"zip": "VARCHAR", "bonus": "DOUBLE"}


def test_verify_passes_then_catches_a_tampered_event_and_object(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n2\n"))
    assert operations.verify(lh) == []
    key = lh.catalog.dataset("w").parts[0].object_key
    lh.store.path(key).write_bytes(b"not the same bytes")
    assert any(key in p and "sha256" in p for p in operations.verify(lh))


def test_verify_catches_a_missing_object(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    key = lh.catalog.dataset("w").parts[0].object_key
    lh.store.path(key).unlink()
    assert operations.verify(lh) == [f"object {key} is missing from {lh.store.url}"]


def test_verify_catches_an_event_edited_behind_the_triggers(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    raw = sqlite3.connect(lh.config.db_path)
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("UPDATE events SET data = json_set(data, '$.object.rows', 99) WHERE seq = 1")
    raw.commit()
    raw.close()
    assert any(p.startswith("seq 1") for p in operations.verify(lh))


def test_gc_removes_only_unreferenced_old_objects_and_stale_workspaces(lakehouse):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    orphan = lh.store.path("datasets/w/" + "0" * 64 + ".parquet")
    orphan.write_bytes(b"left by a crash between put and append")
    stale = lh.staging.root / "dead"
    stale.mkdir()
    (stale / "lock").write_bytes(b"")
    assert operations.gc(lh, grace_s=3600).objects == []  # too young
    live = lh.staging.workspace()  # an ingest in flight: gc must not race it
    dry = operations.gc(lh, grace_s=0, dry_run=True)
    assert dry.workspaces == ["dead"] and stale.exists()  # a dry run deletes nothing at all
    report = operations.gc(lh, grace_s=0)
    assert (report.objects, report.skipped_in_flight) == ([], 1)
    assert report.workspaces == ["dead"]  # the crashed one, not the live one
    assert live.path.exists() and not stale.exists()
    live.close()
    report = operations.gc(lh, grace_s=0)
    assert report.objects == ["datasets/w/" + "0" * 64 + ".parquet"]
    assert operations.verify(lh) == []


def test_two_writers_keep_versions_gapless(lakehouse, make_config):
    lh = lakehouse()
    other = Lakehouse(load_config(make_config()))
    try:
        lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
        out = other.ingest_file(inbox_file(lh, "w.csv", "n\n2\n"))
        assert out.event.data["version"] == 2
        out = lh.ingest_file(inbox_file(lh, "w.csv", "n\n3\n"))  # its catalog was behind
        assert out.event.data["version"] == 3
    finally:
        other.close()
    assert operations.verify(lh) == []


def test_gc_spares_an_old_object_an_ingest_registers_again(lakehouse, monkeypatch):
    # Version 1's object is unreferenced once retention expires it; the same bytes dropped
    # again reuse it. A gc that read what is referenced just before that must not take it.
    lh = lakehouse(datasets="[datasets.w]\nkeep_versions = 1")
    first = lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n2\n"))
    key = first.event.data["object"]["key"]
    os.utime(lh.store.path(key), (0, 0))  # long past any grace period
    stale = lh.catalog.referenced_objects()
    assert key not in stale
    again = lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    assert again.event.data["object"]["key"] == key
    # gc as it would run had it read the catalog before that ingest's append.
    monkeypatch.setattr(lh.catalog, "referenced_objects", lambda: stale)
    assert operations.gc(lh, grace_s=3600).objects == []  # reused: young again
    monkeypatch.undo()
    assert operations.verify(lh) == []


def test_verify_beside_a_writer_sees_one_state(lakehouse, make_config, monkeypatch):
    lh = lakehouse()
    lh.ingest_file(inbox_file(lh, "w.csv", "n\n1\n"))
    other = Lakehouse(load_config(make_config()))
    digest = lh.catalog.digest

    def digest_after_another_append() -> str:
        other.ingest_file(inbox_file(lh, "x.csv", "n\n2\n"))  # the daemon, appending
        return digest()

    monkeypatch.setattr(lh.catalog, "digest", digest_after_another_append)
    try:
        assert operations.verify(lh) == []
    finally:
        other.close()
