"""The search projection: FTS over the events, folded with each append, rebuilt by replay."""

from __future__ import annotations

import pytest

from lakehoused.catalog import Catalog
from lakehoused.errors import VersionConflict
from lakehoused.events import DatasetRegistered, IngestDuplicate, IngestRejected
from lakehoused.log import EventLog
from lakehoused.search import EventSearch, Projections, find_events, fts_query


def rejected(name: str, reason: str, dataset: str | None = None, **details):
    source = {"name": name, "uri": f"file:///inbox/{name}", "sha256": "0" * 64, "bytes": 1}
    return IngestRejected(source, reason, details, dataset).to_event()


def duplicate(name: str, dataset: str):
    source = {"name": name, "uri": f"file:///inbox/{name}", "sha256": "1" * 64, "bytes": 1}
    return IngestDuplicate(source, 1, "datasets/x.parquet", dataset).to_event()


@pytest.fixture
def log(tmp_path):
    with EventLog(tmp_path / "l.db", Projections(Catalog(), EventSearch())) as log:
        log.append(rejected("sales/2026-11-01.csv", "line 3: expected 2 fields, got 3", "sales"))
        log.append(rejected("bad.csv", "not UTF-8 at byte 17", "bad", byte_offset=17))
        log.append(duplicate("sales/2026-11-02.csv", "sales"))
        log.append(rejected("Zoë's file.csv", "value N/A in column amount", "zoe"))
        yield log


def seqs(found) -> list[int]:
    return [e.seq for e in found]


def test_text_search_finds_words_prefixes_and_file_names(log):
    assert seqs(find_events(log, text="fields")) == [1]
    assert seqs(find_events(log, text="ragged fields")) == []  # every word must match
    assert seqs(find_events(log, text="UTF")) == [2]
    assert seqs(find_events(log, text="utf-8")) == [2]
    assert seqs(find_events(log, text="expect")) == [1]  # a prefix
    assert seqs(find_events(log, text="2026-11")) == [1, 3]
    assert seqs(find_events(log, text="bad.csv")) == [2]
    assert seqs(find_events(log, text="N/A")) == [4]
    assert seqs(find_events(log, text="zoe")) == [4]  # diacritics folded
    assert seqs(find_events(log, text='"unbalanced ( * OR')) == []  # never FTS syntax
    assert seqs(find_events(log, text="17")) == [2]  # a rejection's details


def test_filters_combine_and_page_either_way(log):
    assert seqs(find_events(log, type="ingest.rejected")) == [1, 2, 4]
    assert seqs(find_events(log, dataset="sales")) == [1, 3]
    assert seqs(find_events(log, dataset="sales", type="ingest.duplicate")) == [3]
    assert seqs(find_events(log, dataset="sales", text="fields")) == [1]
    assert seqs(find_events(log, newest_first=True, limit=2)) == [4, 3]
    assert seqs(find_events(log, newest_first=True, before=3, limit=2)) == [2, 1]
    assert seqs(find_events(log, after=1, before=4)) == [2, 3]


def test_fts_query_quotes_every_word():
    assert fts_query('  a  b"c ') == '"a"* "b""c"*'
    assert fts_query("") == ""


def test_the_log_keeps_its_own_triggers_and_verifies(log):
    triggers = {
        r[0]
        for r in log.connection.execute(
            "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='events'"
        )
    }
    assert triggers == {
        "events_no_update",
        "events_no_delete",
        "events_no_gap",
        "events_chained",
        "events_no_overwrite",
    }
    assert log.verify_chain() == []


def test_replay_rebuilds_the_index(log):
    log.connection.execute("DELETE FROM search_events")  # the index is only a projection
    assert seqs(find_events(log, text="fields")) == []
    log.replay()
    assert seqs(find_events(log, text="fields")) == [1]


def test_an_append_the_catalog_refuses_indexes_nothing(tmp_path):
    # The index folds first here, so only the one transaction can take its row back out.
    log = EventLog(tmp_path / "l.db", Projections(EventSearch(), Catalog()))
    log.append(rejected("a.csv", "empty file", "a"))
    stale = DatasetRegistered(
        dataset="late",
        version=2,  # built against version 1, which the catalog has never seen
        mode="replace",
        object={"key": "datasets/late/x.parquet", "sha256": "2" * 64, "bytes": 1, "rows": 1},
        source={"name": "late.csv", "uri": "file:///late.csv", "sha256": "3" * 64, "bytes": 1},
        schema=[{"name": "a", "type": "BIGINT", "nullable": True}],
        fingerprint="f",
    )
    with pytest.raises(VersionConflict):
        log.append(stale.to_event())
    assert seqs(find_events(log, text="late")) == []
    assert log.connection.execute("SELECT seq FROM search_position").fetchone()[0] == 1
    log.close()


def test_a_log_from_before_the_index_is_indexed_on_open(tmp_path):
    with EventLog(tmp_path / "l.db", Catalog()) as old:
        old.append(rejected("a.csv", "line 9: unterminated quote", "a"))
        old.append(rejected("b.csv", "empty file", "b"))
    with EventLog(tmp_path / "l.db", Projections(Catalog(), EventSearch())) as log:
        assert seqs(find_events(log, text="unterminated")) == [1]
        log.append(rejected("c.csv", "another unterminated quote", "c"))
        assert seqs(find_events(log, text="unterminated")) == [1, 3]
        position = log.connection.execute("SELECT seq FROM search_position").fetchone()[0]
        assert position == 3


async def test_get_events_filters_searches_and_pages(lakehouse_client):
    client = await lakehouse_client()
    for event in (
        rejected("sales/2026-11-01.csv", "line 3: expected 2 fields, got 3", "sales"),
        rejected("bad.csv", "not UTF-8 at byte 17", "bad", byte_offset=17),
        duplicate("sales/2026-11-02.csv", "sales"),
        rejected("late.csv", "a ragged row at line 9", "late"),
    ):
        client.backend.log.append(event)

    async def get(**params) -> dict:
        response = await client.get("/events", params=params)
        assert response.status == 200, await response.text()
        return await response.json()

    first = await get(order="desc", limit=3)
    assert [e["seq"] for e in first["events"]] == [4, 3, 2]
    assert first["next_before"] == 2 and "next_after" not in first
    last = await get(order="desc", limit=1, before=first["next_before"])
    assert [e["seq"] for e in last["events"]] == [1] and last["next_before"] is None
    both = await get(dataset="sales", type="ingest.rejected")
    assert [e["seq"] for e in both["events"]] == [1] and both["next_after"] == 1
    found = await get(q="ragged line")
    assert [e["summary"] for e in found["events"]] == ["rejected late.csv: a ragged row at line 9"]
    assert (await get(q="utf", order="desc"))["events"][0]["dataset"] == "bad"
    bad = await client.get("/events", params={"order": "sideways"})
    assert bad.status == 400
    assert "order: must be asc or desc" in (await bad.json())["error"]["message"]
