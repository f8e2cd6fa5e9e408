"""The converter on real-world shapes of CSV: each cause of issue 7, dialects, encodings.

Every file here is small and written by this test. Where a rejection names a setting, the
test follows the advice literally — it copies `datasets.<name>.<key> = <value>` out of the
message into a real config.toml — and the file must then be accepted, with exact values.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakehoused.config import load_config
from lakehoused.errors import RejectedFile
from lakehoused.ingest import CsvFormat, convert, format_for


def read(source: Path, fmt: CsvFormat | None = None, **kwargs) -> tuple[list[dict], dict]:
    """Convert; the rows as dicts, and the dialect recorded."""
    target = source.with_suffix(".parquet")
    conversion = convert(source, target, fmt or CsvFormat(), dataset="d", **kwargs)
    return pq.read_table(target).to_pylist(), conversion.dialect


def rejected(source: Path, fmt: CsvFormat | None = None) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        read(source, fmt)
    return info.value


def advice(message: str, key: str) -> str:
    """The TOML line `key = value` that a rejection message tells the user to set."""
    found = re.search(rf"datasets\.d\.({key}) = (\"[^\"]*\"|'[^']*'|[0-9]+|true|false)", message)
    assert found, f"no advice for {key} in: {message}"
    return f"{found.group(1)} = {found.group(2)}"


def follow(source: Path, make_config, message: str, *keys: str) -> list[dict]:
    """Apply the advice for `keys` in a real config file; convert again; the rows."""
    lines = [advice(message, key) for key in keys]
    tomllib.loads("\n".join(lines))  # the advice is valid TOML as written
    config = load_config(make_config(datasets="[datasets.d]\n" + "\n".join(lines)))
    fmt = format_for(config.dataset_options("d"), source.name)
    rows, _ = read(source, fmt, rejects_target=source.with_suffix(".rejects.parquet"))
    return rows


# -- the causes of altered content: each now rejected, naming its line -------------------


def test_a_trailing_empty_extra_field_is_rejected_not_dropped(write_csv):
    error = rejected(write_csv("a.csv", "a,b,c\n1,2,3\n4,5,6,\n"))
    assert str(error).startswith("line 3: expected 3 fields, got 4 (the line ends with a")


def test_one_separator_too_many_never_shifts_values_left(write_csv):
    error = rejected(write_csv("a.csv", "a,b,c\n1,2,3\n4,,5,\n7,8,9\n"))
    assert str(error).startswith("line 3: expected 3 fields, got 4")


def test_a_header_shorter_than_its_rows_is_rejected(write_csv):
    error = rejected(write_csv("a.csv", "a,b\n1,2,3\n4,5,6\n7,8,9\n"))
    assert str(error).startswith("line 2: expected 2 fields, got 3")
    assert "skip_rows" not in str(error)  # skipping the header would lose a row of values


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ('st,n\n "AL",1\n', 2, "a space before the opening quote"),
        ('st,n\n"onions"  ,1\n', 2, "a space after the closing quote"),
        ('st,n\n "a, b",1\n', 2, "a space before the opening quote"),
        ('st,n\nx,1\n"x"y,2\n', 3, "text after a closing quote"),
    ],
)
def test_whitespace_or_text_beside_quotes_is_rejected_never_merged(write_csv, text, line, what):
    error = rejected(write_csv("a.csv", text))
    assert str(error).startswith(f"line {line}: {what}")
    assert error.details["line"] == line


def test_a_quote_inside_an_unquoted_value_is_refused(write_csv):
    # `1,"x,y",3` with its first separator lost: the quote would restore the field count.
    error = rejected(write_csv("a.csv", 'a,b,c\n0,"p,q",2\n1"x,y",3\n'))
    assert str(error).startswith('line 3: a " inside an unquoted value')


def test_an_unterminated_quote_in_the_header_rejects_a_71_row_file(write_csv):
    error = rejected(write_csv("a.csv", '"id,name\n' + "".join(f"{i},x\n" for i in range(71))))
    assert str(error).startswith("line 1: a quoted value opened here")
    assert "never closed" in str(error)


def test_an_unterminated_quote_in_the_last_value_is_rejected(write_csv):
    error = rejected(write_csv("a.csv", 'a,b\n1,x\n2,"open\n3,y\n'))
    assert str(error).startswith("line 3: a quoted value opened here")


def test_quarantine_named_by_a_rejection_keeps_the_good_rows(write_csv, make_config):
    source = write_csv("a.csv", "a,b\n1,2\n3,4,5\n6,7\n")
    error = rejected(source)
    assert follow(source, make_config, str(error), "on_bad_rows") == [
        {"a": 1, "b": 2},
        {"a": 6, "b": 7},
    ]
    kept = pq.read_table(source.with_suffix(".rejects.parquet")).to_pylist()
    assert kept == [{"line": 3, "record": "3,4,5", "reason": "expected 2 fields, got 3"}]


def test_header_names_are_kept_as_written_not_trimmed(write_csv):
    rows, _ = read(write_csv("a.csv", " id ,name\n1,a\n"))
    assert rows == [{" id ": 1, "name": "a"}]


# -- dialects: sniffed, or set ------------------------------------------------------------


@pytest.mark.parametrize(
    ("delimiter", "name"), [(";", "semicolon"), ("|", "pipe"), ("\t", "tab"), (":", "colon")]
)
def test_the_delimiter_is_sniffed_in_a_csv_file(write_csv, delimiter, name):
    text = f"id{delimiter}amount{delimiter}note\n1{delimiter}2,5{delimiter}a b\n"
    text += f"2{delimiter}3,5{delimiter}c\n"
    rows, dialect = read(write_csv(f"{name}.csv", text))
    assert rows == [
        {"id": 1, "amount": "2,5", "note": "a b"},
        {"id": 2, "amount": "3,5", "note": "c"},
    ]
    assert (dialect["delimiter"], dialect["delimiter_from"]) == (delimiter, "sniffed")


def test_an_excel_sep_line_names_the_delimiter(write_csv):
    rows, dialect = read(write_csv("a.csv", "sep=;\r\na;b\r\n1,5;x\r\n"))
    assert rows == [{"a": "1,5", "b": "x"}]
    assert (dialect["delimiter"], dialect["sep_line"]) == (";", True)


def test_an_ambiguous_delimiter_is_rejected_and_the_setting_fixes_it(write_csv, make_config):
    source = write_csv("a.csv", "a;b|c\n1;2|3\n4;5|6\n")
    error = rejected(source)
    assert str(error).startswith("cannot tell the delimiter")
    message = str(error).replace("datasets.d.delimiter to", 'datasets.d.delimiter = "|" to')
    assert follow(source, make_config, message, "delimiter") == [
        {"a;b": "1;2", "c": 3},
        {"a;b": "4;5", "c": 6},
    ]


def test_a_title_above_the_header_names_skip_rows(write_csv, make_config):
    source = write_csv("a.csv", "Sales report, 2026\n\nid;name;amount\n1;a;2\n2;b;3\n3;c;4\n")
    error = rejected(source)
    assert str(error).startswith("line 3 starts 3 fields separated by semicolons")
    rows = follow(source, make_config, str(error), "skip_rows", "delimiter")
    assert rows[0] == {"id": 1, "name": "a", "amount": 2}
    assert len(rows) == 3


def test_a_title_is_named_even_when_the_delimiter_is_set(write_csv, make_config):
    source = write_csv("a.csv", "Report\nid,name,amount\n1,a,2\n2,b,3\n3,c,4\n")
    error = rejected(source, CsvFormat(delimiter=","))
    assert "skip_rows = 1" in str(error)
    assert len(follow(source, make_config, str(error), "skip_rows")) == 3


def test_comment_lines_are_named_and_then_skipped(write_csv, make_config):
    source = write_csv("a.csv", 'a,b\n1,2\n# checked by "ops", 2026, twice\n3,4\n')
    error = rejected(source)
    assert str(error).startswith('line 3: a " inside an unquoted value')
    assert follow(source, make_config, str(error), "comment") == [
        {"a": 1, "b": 2},
        {"a": 3, "b": 4},
    ]


def test_comment_lines_without_quotes_are_named_too(write_csv, make_config):
    source = write_csv("a.csv", "a,b\n1,2\n# checked, twice, by ops\n3,4\n")
    error = rejected(source)
    assert str(error).startswith("line 3: expected 2 fields, got 3")
    assert len(follow(source, make_config, str(error), "comment")) == 2
    assert read(source, CsvFormat(comment="#"))[0] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_literal_quotes_in_a_tsv_are_named_and_quoting_can_be_turned_off(write_csv, make_config):
    source = write_csv("titles.tsv", 'id\ttitle\n1\tThe "Best" Film\n2\t"Quoted" start\n')
    fmt = CsvFormat(default_delimiter="\t")
    error = rejected(source, fmt)
    assert str(error).startswith('line 2: a " inside an unquoted value')
    assert follow(source, make_config, str(error), "quote") == [
        {"id": 1, "title": 'The "Best" Film'},
        {"id": 2, "title": '"Quoted" start'},
    ]


def test_backslash_escapes_are_named_and_then_read(write_csv, make_config):
    source = write_csv("a.csv", 'a,b\n1,"say \\"hi\\", twice"\n')
    error = rejected(source)
    assert "escape quotes with a backslash" in str(error)
    assert follow(source, make_config, str(error), "escape") == [{"a": 1, "b": 'say "hi", twice'}]


def test_a_header_of_values_is_refused_and_header_false_reads_the_file(write_csv, make_config):
    source = write_csv("a.csv", "1,2.5\n3,4.5\n")
    error = rejected(source)
    assert str(error).startswith("line 1: the header row holds only values (1, 2.5)")
    assert follow(source, make_config, str(error), "header") == [
        {"column_1": 1, "column_2": 2.5},
        {"column_1": 3, "column_2": 4.5},
    ]


def test_header_true_accepts_names_that_look_like_values(write_csv):
    rows, _ = read(write_csv("a.csv", "2025,2026\n1,2\n"), CsvFormat(header=True))
    assert rows == [{"2025": 1, "2026": 2}]


# -- line endings and line numbers --------------------------------------------------------


def test_mixed_line_endings_are_accepted(write_csv):
    rows, dialect = read(write_csv("a.csv", "a,b\r\n1,2\n3,4\r5,6\r\n"))
    assert rows == [{"a": 1, "b": 2}, {"a": 3, "b": 4}, {"a": 5, "b": 6}]
    assert dialect["line_endings"] == "mixed"


def test_line_numbers_count_every_kind_of_line_break_as_an_editor_does(write_csv):
    # Lines: 1 header CRLF, 2 LF, 3-4 a quoted CR inside a value, 5 CRLF, 6 the bad one.
    text = 'a,b\r\n1,2\n3,"x\ry"\n5,6\r\n7,8,9\n'
    assert str(rejected(write_csv("a.csv", text))).startswith("line 6: expected 2 fields")


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_each_line_ending_alone(write_csv, ending, both_runs):
    text = ending.join(["a,b", "1,x", '2,"y' + ending + 'z"', "3,w", ""])
    rows, dialect = read(write_csv("a.csv", text))
    assert [r["b"] for r in rows] == ["x", "y" + ending + "z", "w"]
    assert dialect["line_endings"] == {"\n": "LF", "\r\n": "CRLF", "\r": "CR"}[ending]


# -- encodings ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_bom_needs_no_setting(write_csv, codec):
    data = "name,city\nZoë,Besançon\n".encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data
    rows, dialect = read(write_csv("a.csv", data))
    assert rows == [{"name": "Zoë", "city": "Besançon"}]
    assert dialect["bom"] is not None


@pytest.mark.parametrize(
    ("codec", "text"),
    [
        ("cp1252", "nom,ville\n" + "René,Besançon\nJérôme,Orléans\nZoë,Genève\n" * 8),
        ("windows-1251", "имя,город\n" + "Иван,Москва\nПётр,Санкт-Петербург\nАнна,Омск\n" * 8),  # noqa: RUF001
        ("shift_jis", "名前,都市\n" + "田中,東京\n山田,大阪\n佐藤,京都\n" * 8),
    ],
)
def test_other_encodings_are_named_when_a_detector_is_sure(write_csv, make_config, codec, text):
    source = write_csv("a.csv", text.encode(codec))
    error = rejected(source)
    assert str(error).startswith("not valid UTF-8 at byte offset")
    assert "latin-1" not in str(error)  # never the blind guess that makes mojibake
    rows = follow(source, make_config, str(error), "encoding")
    header, *lines = text.splitlines()
    assert [list(r.values()) for r in rows] == [line.split(",") for line in lines]
    assert list(rows[0]) == header.split(",")


def test_without_a_confident_guess_the_advice_says_how_to_find_out(write_csv):
    error = rejected(write_csv("a.csv", b"a,b\n1,\xff\xfe\x81\n"))
    assert str(error).startswith("not valid UTF-8 at byte offset 6 (line 2)")
    assert "find out which encoding" in str(error)


def test_a_wrong_encoding_setting_says_where(write_csv):
    # A lone surrogate is no UTF-16 at all.
    source = write_csv("a.csv", "a\n".encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le"))
    error = rejected(source, CsvFormat(encoding="utf-16-le"))
    assert str(error).startswith("not valid utf-16-le at byte offset 4 (line 2)")
    assert "datasets.d.encoding (utf-16-le)" in str(error)


def test_any_codec_can_be_set(write_csv):
    source = write_csv("a.csv", "a,b\n1,Ω\n".encode("iso8859-7"))
    rows, dialect = read(source, CsvFormat(encoding="iso8859-7"))
    assert rows == [{"a": 1, "b": "Ω"}]
    assert dialect["encoding"] == "iso8859-7"


# -- size limits --------------------------------------------------------------------------


def test_a_file_of_9074_columns_converts(write_csv):
    names = [f"c{i}" for i in range(9074)]
    rows = [[str(i * j % 7) if j % 3 else f"t{j}" for j in range(9074)] for i in range(12)]
    text = ",".join(names) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    target = write_csv("wide.csv", text).with_suffix(".parquet")
    conversion = convert(target.with_suffix(".csv"), target, CsvFormat(), dataset="d")
    assert (conversion.rows, len(conversion.columns)) == (12, 9074)
    table = pq.read_table(target, columns=["c1", "c3", "c9073"])
    assert table.column("c1").to_pylist() == [i % 7 for i in range(12)]
    assert table.column("c3").to_pylist() == [f"t{3}"] * 12


def test_a_record_beyond_the_budget_is_rejected_at_once_and_the_advice_works(
    write_csv, make_config
):
    big = "x" * (5 << 20)
    source = write_csv("a.csv", f"a,b\n1,{big}\n2,y\n")
    error = rejected(source, CsvFormat(memory_bytes=64 << 20))
    assert str(error).startswith("line 2: a record longer than 4 MiB")
    rows = follow(source, make_config, str(error), "converter_memory")
    assert [len(r["b"]) for r in rows] == [len(big), 1]


@pytest.fixture(params=["runs of 1 KiB", "one run"])
def both_runs(request, monkeypatch):
    """Read in tiny runs (every boundary case of the check) or in one."""
    if request.param == "runs of 1 KiB":
        import lakehoused.ingest.text as text

        monkeypatch.setattr(text, "CHUNK_BYTES", 1024)
    return request.param


def test_a_character_cut_by_the_end_of_the_sniffed_sample_is_no_error(write_csv):
    # The sniffer looks at the first 64 KiB: put a two-byte character across that edge.
    head = "a,b\n"
    filler = "".join(f"{i},x\n" for i in range(20000))
    prefix = (head + filler).encode()[: (64 << 10) - 1]
    prefix = prefix[: prefix.rfind(b"\n") + 1]
    pad = (64 << 10) - 1 - len(prefix) - 2
    text = prefix + b"1," + b"y" * pad + "é".encode() + b"\n2,z\n"
    rows, _ = read(write_csv("a.csv", text))
    assert rows[-2]["b"].endswith("é") and rows[-1] == {"a": 2, "b": "z"}


def test_a_damaged_gzip_file_is_rejected_saying_so(write_csv):
    import gzip

    whole = gzip.compress(b"a,b\n" + b"1,2\n" * 1000)
    source = write_csv("a.csv.gz", whole[: len(whole) // 2])
    error = rejected(source, CsvFormat(compression="gzip"))
    assert str(error).startswith("not a valid gzip file")
    rows, _ = read(write_csv("a.csv", gzip.decompress(whole)))
    assert len(rows) == 1000


def test_skip_rows_beyond_the_file_says_how_many_lines_there_are(write_csv):
    error = rejected(write_csv("a.csv", "title\na,b\n1,2"), CsvFormat(skip_rows=9))
    assert str(error) == "the file has only 3 line(s): datasets.d.skip_rows = 9 skips all of them"
