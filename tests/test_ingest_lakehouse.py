"""Issue 7 through the lakehouse and the command line: the dialect in the event, and
`on_bad_rows = "quarantine"` keeping bad records in `<name>__rejected_rows`."""

from __future__ import annotations

import json

from lakehoused import operations
from lakehoused.cli import main
from lakehoused.lakehouse import Lakehouse
from tests.helpers import query


def drop(lh: Lakehouse, relpath: str, content: str | bytes):
    path = lh.config.inbox.path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    return path


QUARANTINE = '[datasets.sales]\non_bad_rows = "quarantine"'
BAD = 'day;amount\n1;10\n2;20;x\n3;30\n4;"4"0\n5;50\n'


def test_the_dialect_used_is_in_the_registered_event(lakehouse):
    lh = lakehouse()
    out = lh.ingest_file(drop(lh, "prices.csv", "\ufeffsep=;\r\nitem;price\r\npen;1,50\r\n"))
    assert out.status == "registered"
    dialect = out.event.data["dialect"]
    assert dialect == {
        "delimiter": ";",
        "delimiter_from": "sep line",
        "quote": '"',
        "escape": None,
        "header": True,
        "skip_rows": 0,
        "comment": None,
        "encoding": "utf-8",
        "bom": "utf-8",
        "sep_line": True,
        "line_endings": "CRLF",
    }
    assert out.event.data["rejected_rows"] == 0
    assert query(lh, "SELECT item, price FROM prices") == [("pen", "1,50")]


def test_dataset_settings_reach_the_converter(lakehouse):
    lh = lakehouse('[datasets.films]\nquote = ""\nskip_rows = 1\nheader = false')
    out = lh.ingest_file(drop(lh, "films.tsv", 'exported 2026\n1\tThe "Best"\n2\tx\n'))
    assert out.status == "registered", out.reason
    assert out.event.data["dialect"]["quote"] == ""
    assert query(lh, "SELECT * FROM films ORDER BY 1") == [(1, 'The "Best"'), (2, "x")]


def test_quarantine_registers_the_good_rows_and_keeps_the_bad_ones(lakehouse):
    lh = lakehouse(QUARANTINE)
    out = lh.ingest_file(drop(lh, "sales/day1.csv", BAD))
    assert out.status == "registered", out.reason
    assert (out.event.data["object"]["rows"], out.event.data["rejected_rows"]) == (3, 2)
    assert query(lh, "SELECT day, amount FROM sales ORDER BY day") == [(1, 10), (3, 30), (5, 50)]
    rejected = query(lh, "SELECT line, record, reason FROM sales__rejected_rows ORDER BY line")
    assert [(line, record) for line, record, _ in rejected] == [(3, "2;20;x"), (5, '4;"4"0')]
    assert rejected[0][2] == "expected 2 fields, got 3"
    assert rejected[1][2].startswith("text after a closing quote")
    companion = lh.catalog.dataset("sales__rejected_rows")
    assert (companion.mode, companion.rows) == ("append", 2)
    # The same file again is a duplicate: no second copy of its bad rows.
    again = lh.ingest_file(drop(lh, "sales/day1.csv", BAD))
    assert again.status == "duplicate"
    assert lh.catalog.dataset("sales__rejected_rows").rows == 2
    # Another file adds its own bad rows as one more part; too short to sniff alone, its
    # delimiter is the one that splits its header into the dataset's columns.
    lh.ingest_file(drop(lh, "sales/day2.csv", "day;amount\n6;60\n7\n"))
    assert query(lh, "SELECT count(*) FROM sales__rejected_rows") == [(3,)]
    assert operations.verify(lh) == []


def test_without_bad_rows_no_companion_dataset_appears(lakehouse):
    lh = lakehouse(QUARANTINE)
    lh.ingest_file(drop(lh, "sales/ok.csv", "day;amount\n1;10\n"))
    assert lh.catalog.dataset("sales__rejected_rows") is None


def test_by_default_a_bad_row_rejects_the_whole_file(lakehouse):
    lh = lakehouse()
    out = lh.ingest_file(drop(lh, "sales/day1.csv", BAD))
    assert out.status == "rejected"
    assert out.reason.startswith("line 3: expected 2 fields, got 3")
    assert 'datasets.sales.on_bad_rows = "quarantine"' in out.reason
    assert lh.catalog.dataset("sales") is None


def test_cli_ingest_with_quarantine_says_how_many_rows_were_kept_aside(make_config, capsys):
    config = make_config(datasets=QUARANTINE)
    source = config.parent / "src" / "sales" / "day1.csv"
    source.parent.mkdir(parents=True)
    source.write_text(BAD, encoding="utf-8")
    assert main(["ingest", str(source), "--dataset", "sales", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "3 rows" in out and "2 bad rows kept in sales__rejected_rows" in out
    sql = "SELECT line FROM sales__rejected_rows ORDER BY line"
    assert main(["sql", sql, "--format", "json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == [[3], [5]]


def test_cli_rejection_names_the_line_not_the_engine(make_config, capsys):
    config = make_config()
    source = config.parent / "src" / "bad.csv"
    source.parent.mkdir(parents=True)
    source.write_text('a,b\n1,2\n3," x"y\n', encoding="utf-8")
    assert main(["ingest", str(source), "--config", str(config)]) == 1
    said = capsys.readouterr()
    assert said.err.startswith("rejected")
    assert "line 3: text after a closing quote" in said.err
