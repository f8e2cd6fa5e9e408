"""CSV -> Parquet conversion: every type rule and every rejection of DESIGN §3."""

from __future__ import annotations

import csv
import datetime
import gzip
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakehoused.errors import RejectedFile
from lakehoused.ingest import CsvFormat, convert
from lakehoused.ingest.parquet import ROW_GROUP_ROWS
from lakehoused.schema import Column

LATE = 5000  # a row well past the first run of records when runs are small
CONVERT = sys.modules["lakehoused.ingest.convert"]
TEXT = sys.modules["lakehoused.ingest.text"]
PARQUET = sys.modules["lakehoused.ingest.parquet"]


@pytest.fixture(params=["many runs and row groups, spilled", "one run"])
def both_paths(request, monkeypatch):
    """Run a test as large files run (1 KiB runs, row groups of 1,000 rows written while
    reading, an on-disk spill written again when a late value changes a type), and in one
    run."""
    if request.param != "one run":
        monkeypatch.setattr(TEXT, "CHUNK_BYTES", 1024)
        monkeypatch.setattr(PARQUET, "ROW_GROUP_ROWS", 1000)
        monkeypatch.setattr(CONVERT, "_spill_limit", lambda fmt: 0)
    return request.param


def run(source: Path, fmt: CsvFormat | None = None, **kwargs) -> tuple[dict, list[Column]]:
    fmt = fmt or CsvFormat()
    target = source.with_suffix(".parquet")
    conversion = convert(source, target, fmt, dataset=kwargs.pop("dataset", "t"), **kwargs)
    table = pq.read_table(target)
    assert table.num_rows == conversion.rows
    return table.to_pydict(), conversion.columns


def types_of(columns: list[Column]) -> dict[str, str]:
    return {c.name: c.type for c in columns}


def rows_csv(header: str, rows: list[str]) -> str:
    return header + "\n" + "\n".join(rows) + "\n"


def test_each_type_is_inferred(write_csv, both_paths):
    source = write_csv(
        "a.csv",
        "i,f,b,d,ts,s,big,wide\n"
        "1,1.5,true,2024-01-31,2024-01-31 10:00:00,x,1234567890123456789,123456789012345678901234567890\n"
        "-2,2e3,FALSE,2024-02-29,2024-02-29T23:59:59.123456,y,-9223372036854775808,1\n",
    )
    data, columns = run(source)
    assert types_of(columns) == {
        "i": "BIGINT",
        "f": "DOUBLE",
        "b": "BOOLEAN",
        "d": "DATE",
        "ts": "TIMESTAMP",
        "s": "VARCHAR",
        "big": "BIGINT",
        "wide": "DECIMAL(38,0)",
    }
    assert data["i"] == [1, -2]
    assert data["f"] == [1.5, 2000.0]
    assert data["b"] == [True, False]
    assert data["d"] == [datetime.date(2024, 1, 31), datetime.date(2024, 2, 29)]
    assert data["ts"][1] == datetime.datetime(2024, 2, 29, 23, 59, 59, 123456)
    assert data["big"] == [1234567890123456789, -9223372036854775808]
    assert data["wide"] == [Decimal("123456789012345678901234567890"), Decimal(1)]


def test_late_text_value_makes_the_column_varchar(write_csv, both_paths):
    rows = [f"{i},{i * 10}" for i in range(LATE)] + [f"{LATE},unknown"]
    data, columns = run(write_csv("a.csv", rows_csv("id,amount", rows)))
    assert types_of(columns)["amount"] == "VARCHAR"
    assert data["amount"][-1] == "unknown"
    assert data["amount"][5] == "50"
    assert data["id"][-1] == LATE


def test_late_fraction_makes_the_column_double_never_rounded(write_csv, both_paths):
    rows = [f"{i},{i}" for i in range(LATE)] + [f"{LATE},12.5"]
    data, columns = run(write_csv("a.csv", rows_csv("id,amount", rows)))
    assert types_of(columns)["amount"] == "DOUBLE"
    assert data["amount"][-1] == 12.5
    assert data["amount"][7] == 7.0


def test_row_groups_written_before_a_late_change_are_written_again(
    write_csv, both_paths, monkeypatch
):
    rewrites = []
    original = PARQUET.rewrite
    monkeypatch.setattr(PARQUET, "rewrite", lambda *a: rewrites.append(1) or original(*a))
    rows = [f"{i},{i}" for i in range(LATE)] + [f"{LATE},twelve"]
    source = write_csv("a.csv", rows_csv("id,amount", rows))
    data, columns = run(source)
    assert len(rewrites) == (1 if both_paths != "one run" else 0)
    assert types_of(columns) == {"id": "BIGINT", "amount": "VARCHAR"}
    assert data["amount"] == [str(i) for i in range(LATE)] + ["twelve"]
    meta = pq.ParquetFile(source.with_suffix(".parquet")).metadata
    expected_groups = 6 if both_paths != "one run" else 1
    assert meta.num_row_groups == expected_groups
    assert {meta.schema.column(1).physical_type} == {"BYTE_ARRAY"}


def test_big_integers_with_a_fraction_stay_text_rather_than_lose_digits(write_csv):
    rows = ["1234567890123456789", "1.5"]
    data, columns = run(write_csv("a.csv", rows_csv("n", rows)))
    assert types_of(columns)["n"] == "VARCHAR"
    assert data["n"] == rows


def test_leading_zeros_are_kept(write_csv, both_paths):
    data, columns = run(write_csv("a.csv", rows_csv("zip,code", ["02134,007", "10001,100"])))
    assert types_of(columns) == {"zip": "VARCHAR", "code": "VARCHAR"}
    assert data["zip"] == ["02134", "10001"]
    assert data["code"] == ["007", "100"]


@pytest.mark.parametrize("token", ["N/A", "NA", "NULL", "null", "-"])
def test_null_like_tokens_are_values_not_nulls(write_csv, token):
    data, columns = run(write_csv("a.csv", rows_csv("x", ["1", token, ""])))
    assert types_of(columns) == {"x": "VARCHAR"}
    assert data["x"] == ["1", token, None]


def test_only_empty_cells_are_null_and_quoted_empty_too(write_csv):
    data, columns = run(write_csv("a.csv", 'a,b\n1,""\n,x\n'))
    assert data == {"a": [1, None], "b": [None, "x"]}
    assert [c.nullable for c in columns] == [True, True]


def test_null_values_setting_turns_tokens_into_nulls(write_csv):
    source = write_csv("a.csv", rows_csv("x", ["1.5", "N/A", "2"]))
    data, columns = run(source, CsvFormat(null_values=("N/A",)))
    assert types_of(columns) == {"x": "DOUBLE"}
    assert data["x"] == [1.5, None, 2.0]


def test_type_hints_win_when_they_hold_every_value(write_csv):
    source = write_csv("a.csv", rows_csv("zip,n", ["12345,1", "54321,2"]))
    data, columns = run(source, hints={"zip": "VARCHAR", "n": "DOUBLE"})
    assert types_of(columns) == {"zip": "VARCHAR", "n": "DOUBLE"}
    assert data["zip"] == ["12345", "54321"]


def test_a_hint_that_would_alter_values_is_refused(write_csv, both_paths):
    source = write_csv("a.csv", rows_csv("n", ["1", "12.5"]))
    with pytest.raises(RejectedFile, match=r"column n is set to BIGINT .* fractions"):
        run(source, hints={"n": "BIGINT"})


def test_a_hint_for_a_missing_column_is_refused(write_csv):
    with pytest.raises(RejectedFile, match="nope"):
        run(write_csv("a.csv", "a\n1\n"), hints={"nope": "BIGINT"})


def test_whitespace_is_part_of_the_value(write_csv):
    data, columns = run(write_csv("a.csv", "n,s\n 1, x \n"))
    assert types_of(columns) == {"n": "VARCHAR", "s": "VARCHAR"}
    assert data == {"n": [" 1"], "s": [" x "]}


def test_quoted_multiline_values_and_crlf(write_csv):
    text = 'id,notes\r\n1,"line one\r\nline two, with ""quotes"""\r\n2,plain\r\n'
    data, _ = run(write_csv("a.csv", text))
    assert data["notes"] == ['line one\r\nline two, with "quotes"', "plain"]


def test_utf8_bom_is_dropped_from_the_header(write_csv):
    data, _ = run(write_csv("a.csv", "\ufeffname,n\nZoë,1\n".encode()))
    assert data == {"name": ["Zoë"], "n": [1]}


def test_invalid_utf8_is_rejected_with_its_byte_offset(write_csv):
    content = b"a,b\n1,ok\n2,caf\xe9\n"
    with pytest.raises(RejectedFile) as info:
        run(write_csv("a.csv", content))
    offset = content.index(b"\xe9")
    assert f"byte offset {offset}" in str(info.value)
    assert "line 3" in str(info.value)
    assert info.value.details["byte_offset"] == offset


def test_latin1_is_read_when_configured(write_csv):
    data, _ = run(
        write_csv("a.csv", "a,b\n1,café\n".encode("latin-1")), CsvFormat(encoding="latin-1")
    )
    assert data["b"] == ["café"]


def test_ragged_row_is_rejected_naming_its_line(write_csv):
    # The multi-line value makes line numbers differ from row numbers.
    text = 'a,b\n1,"two\nlines"\n2,x\n3,x,extra\n4,x\n'
    with pytest.raises(RejectedFile, match=r"^line 5: expected 2 fields, got 3") as info:
        run(write_csv("a.csv", text))
    assert info.value.details == {"line": 5}


def test_unterminated_quote_is_rejected_naming_its_line(write_csv):
    with pytest.raises(RejectedFile, match=r"^line 3: a quoted value .* never closed"):
        run(write_csv("a.csv", 'a,b\n1,x\n2,"open\n3,y\n'))


def test_text_after_a_closing_quote_is_rejected(write_csv):
    with pytest.raises(RejectedFile, match=r"^line 2"):
        run(write_csv("a.csv", 'a,b\n2,"x"y\n'))


def test_empty_file_is_rejected(write_csv):
    with pytest.raises(RejectedFile, match="empty"):
        run(write_csv("a.csv", b""))


def test_header_only_file_has_zero_rows(write_csv):
    data, columns = run(write_csv("a.csv", "a,b\n"))
    assert data == {"a": [], "b": []}
    assert types_of(columns) == {"a": "VARCHAR", "b": "VARCHAR"}


def test_blank_and_duplicate_header_names(write_csv):
    data, _ = run(write_csv("a.csv", "x,,x,X, \n1,2,3,4,5\n"))
    assert list(data) == ["x", "column_2", "x_2", "X_3", "column_5"]


def test_tsv_and_gzip(write_csv):
    source = write_csv("a.tsv.gz", gzip.compress(b"a\tb\n1\thello, world\n"))
    data, _ = run(source, CsvFormat(delimiter="\t", compression="gzip"))
    assert data == {"a": [1], "b": ["hello, world"]}


def test_row_groups_are_large_not_one_per_block(write_csv):
    rows = [f"{i},{'x' * 20}" for i in range(ROW_GROUP_ROWS + 10)]
    source = write_csv("a.csv", rows_csv("i,s", rows))
    target = source.with_suffix(".parquet")
    convert(source, target, CsvFormat(), dataset="t")
    assert pq.ParquetFile(target).metadata.num_row_groups == 2


def test_existing_types_are_kept_when_they_hold_the_values(write_csv, both_paths):
    existing = [Column("id", "BIGINT"), Column("amount", "DOUBLE"), Column("zip", "VARCHAR")]
    data, columns = run(write_csv("a.csv", "id,amount,zip\n1,2,12345\n"), existing=existing)
    assert types_of(columns) == {"id": "BIGINT", "amount": "DOUBLE", "zip": "VARCHAR"}
    assert data["zip"] == ["12345"]


def test_a_wider_type_than_the_dataset_has_is_a_schema_change(write_csv, both_paths):
    existing = [Column("bonus", "DOUBLE")]
    with pytest.raises(RejectedFile, match=r"schema change: column bonus .* DOUBLE.*text.*VARCHAR"):
        run(write_csv("a.csv", "bonus\n1.5\nN/A\n"), existing=existing, dataset="w")


def test_new_columns_need_add_columns(write_csv):
    existing = [Column("a", "BIGINT")]
    source = write_csv("a.csv", "b,a\nx,1\n")
    with pytest.raises(RejectedFile, match=r"new column\(s\) b .*add_columns"):
        run(source, existing=existing)
    data, columns = run(source, existing=existing, on_schema_change="add_columns")
    assert [c.name for c in columns] == ["a", "b"]  # the dataset's order first
    assert data == {"a": [1], "b": ["x"]}


def test_missing_columns_are_refused_even_with_add_columns(write_csv):
    existing = [Column("a", "BIGINT"), Column("b", "VARCHAR")]
    with pytest.raises(RejectedFile, match=r"column\(s\) b .* missing"):
        run(write_csv("a.csv", "a\n1\n"), existing=existing, on_schema_change="add_columns")


def test_workers_file_every_cell_matches_pythons_csv(workers_500k, tmp_path):
    target = tmp_path / "workers.parquet"
    conversion = convert(workers_500k, target, CsvFormat(), dataset="workers")
    assert conversion.rows == 500_000
    types = types_of(conversion.columns)
    assert types == {
        "id": "BIGINT",
        "name": "VARCHAR",
        "role": "VARCHAR",
        "state": "VARCHAR",
        "city": "VARCHAR",
        "salary": "DOUBLE",
        "bonus": "VARCHAR",
        "hired_at": "DATE",
        "active": "BOOLEAN",
        "rating": "DOUBLE",
        "notes": "VARCHAR",
    }
    table = pq.read_table(target)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    parse = {
        "BIGINT": int,
        "DOUBLE": float,
        "DATE": datetime.date.fromisoformat,
        "BOOLEAN": lambda v: v == "true",
        "VARCHAR": str,
    }
    with open(workers_500k, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        for i, row in enumerate(reader):
            for name, text in zip(header, row, strict=True):
                expected = None if text == "" else parse[types[name]](text)
                assert columns[name][i] == expected, (i, name, text)
    assert i == 499_999
    assert "N/A" in columns["bonus"]


# Values of every kind, including the traps; the law: what comes out equals what went in.
_VALUE = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["007", "02134", "N/A", "NA", "-", "null", "true", "False", "", " 1"]),
    st.dates().map(str),
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=8
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.lists(_VALUE, min_size=3, max_size=3), min_size=1, max_size=30))
def test_round_trip_preserves_every_value(tmp_path, rows):
    source = tmp_path / "p.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "c"])
        writer.writerows(rows)
    data, columns = run(source)
    for column in columns:
        for row, value in zip(rows, data[column.name], strict=True):
            text = row[["a", "b", "c"].index(column.name)]
            if text == "":
                assert value is None
            elif column.type == "VARCHAR":
                assert value == text
            elif column.type in ("BIGINT", "DECIMAL(38,0)"):
                assert value == int(text)
            elif column.type == "DOUBLE":
                assert value == float(text)
            elif column.type == "BOOLEAN":
                assert value == (text.lower() == "true")
            elif column.type == "DATE":
                assert value == datetime.date.fromisoformat(text)
            else:
                pytest.fail(f"unexpected type {column.type}")


def test_a_rejection_mid_file_stops_every_reading_thread(write_csv, monkeypatch):
    import threading
    import time

    monkeypatch.setattr(TEXT, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(PARQUET, "ROW_GROUP_ROWS", 100)
    before = threading.active_count()
    rows = ["12.5"] + [str(i) for i in range(LATE * 4)]
    with pytest.raises(RejectedFile, match="column n is set to BIGINT"):
        run(write_csv("a.csv", rows_csv("n", rows)), hints={"n": "BIGINT"})
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
