"""Dataset names and inbox paths (DESIGN §2)."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from lakehoused.errors import RejectedFile
from lakehoused.names import (
    ACCEPTED_SUFFIXES,
    DATASET_NAME_RE,
    InboxEntry,
    accepted_suffix,
    compression_for,
    delimiter_for,
    is_ignored,
    is_valid_dataset_name,
    locate,
    normalise_dataset_name,
)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("workers", "workers"),
        ("Sales Report 2026", "sales_report_2026"),
        ("2026-sales", "_2026_sales"),
        # Letters are folded to ASCII first: two files never share "_".
        ("ünïcode", "unicode"),
        ("Ünïcode Ça va", "unicode_ca_va"),
        ("ﬁle", "file"),
        ("a -- b", "a_b"),  # one run, one underscore
        ("a__b", "a__b"),  # underscores are kept as they are
        ("_private", "_private"),
        ("MiXeD.Case", "mixed_case"),
        ("x" * 63, "x" * 63),
    ],
)
def test_normalise_dataset_name(raw: str, name: str) -> None:
    assert normalise_dataset_name(raw) == name
    assert is_valid_dataset_name(name)


def test_leading_digit_prefix_counts_towards_the_limit() -> None:
    assert normalise_dataset_name("1" + "x" * 61) == "_1" + "x" * 61
    with pytest.raises(RejectedFile, match="over the limit of 63"):
        normalise_dataset_name("1" + "x" * 62)


def test_too_long_name_is_rejected_saying_what_to_rename() -> None:
    raw = "a" * 70
    with pytest.raises(RejectedFile) as info:
        normalise_dataset_name(raw)
    message = str(info.value)
    assert f"{raw!r} is not a valid dataset name" in message
    assert "70 characters" in message
    assert "rename the file (or folder) to at most 63" in message
    assert info.value.details == {"value": raw}


@pytest.mark.parametrize("raw", ["日本語", "русский", "-", "_", "__", "—"])
def test_a_name_with_no_letter_or_digit_left_is_rejected(raw: str) -> None:
    with pytest.raises(RejectedFile) as info:
        normalise_dataset_name(raw)
    assert "no letter or digit" in str(info.value)
    assert "--dataset" in str(info.value)


def test_empty_name_is_rejected() -> None:
    with pytest.raises(RejectedFile, match="it is empty"):
        normalise_dataset_name("")


@pytest.mark.parametrize(
    "name",
    ["Workers", "1abc", "a-b", "", "a" * 64, "abc\n", "é"],
)
def test_invalid_dataset_names(name: str) -> None:
    assert not is_valid_dataset_name(name)
    assert not DATASET_NAME_RE.fullmatch(name)


@pytest.mark.parametrize(
    "relpath",
    [
        ".done/workers.csv",
        ".rejected/workers.csv.error.json",
        ".hidden.csv",
        "sales/.DS_Store",
        "sales/.partial/x.csv",
        "workers.csv.tmp",
        "workers.csv.part",
        "workers.csv.partial",
        "workers.csv.crdownload",
        "workers.csv~",
        "WORKERS.CSV.TMP",
        "sales.part/x.csv",
    ],
)
def test_ignored(relpath: str) -> None:
    assert is_ignored(relpath)
    assert is_ignored(PurePosixPath(relpath))


@pytest.mark.parametrize(
    "relpath", ["workers.csv", "sales/2026-11-01.csv", "x.xlsx", "notes.tmpl.csv", "a.b.csv"]
)
def test_not_ignored(relpath: str) -> None:
    assert not is_ignored(relpath)


@pytest.mark.parametrize("relpath", ["/etc/passwd", "../x.csv", "a/../../x.csv", ""])
def test_paths_outside_the_inbox_are_a_programming_error(relpath: str) -> None:
    with pytest.raises(ValueError, match="relative to the inbox root"):
        locate(relpath)


@pytest.mark.parametrize(
    ("relpath", "dataset", "mode"),
    [
        ("workers.csv", "workers", "replace"),
        ("WORKERS.CSV", "workers", "replace"),
        ("workers.tsv", "workers", "replace"),
        ("workers.csv.gz", "workers", "replace"),
        ("Workers.TSV.GZ", "workers", "replace"),
        ("Sales Report 2026.csv", "sales_report_2026", "replace"),
        ("2026-sales.csv", "_2026_sales", "replace"),
        ("a.b.csv", "a_b", "replace"),
        ("sales/2026-11-01.csv", "sales", "append"),
        ("Sales/2026/11/01.tsv.gz", "sales", "append"),
        ("My Sales/x.CSV", "my_sales", "append"),
    ],
)
def test_locate(relpath: str, dataset: str, mode: str) -> None:
    entry = locate(relpath)
    assert entry == InboxEntry(PurePosixPath(relpath), dataset, mode)


def test_locate_takes_any_pure_path() -> None:
    entry = locate(PureWindowsPath("sales\\jan.csv"))
    assert entry == InboxEntry(PurePosixPath("sales/jan.csv"), "sales", "append")


@pytest.mark.parametrize("relpath", ["x.xlsx", "data.json", "sales/x.parquet", "x.gz", "csv"])
def test_locate_rejects_unsupported_suffixes(relpath: str) -> None:
    with pytest.raises(RejectedFile) as info:
        locate(relpath)
    assert str(info.value) == (
        f"only .csv and .tsv files (optionally .gz) are ingested; got {relpath}"
    )


def test_locate_rejects_invalid_names() -> None:
    with pytest.raises(RejectedFile, match="is not a valid dataset name"):
        locate("a" * 70 + ".csv")
    with pytest.raises(RejectedFile, match="is not a valid dataset name"):
        locate("b" * 64 + "/x.csv")
    # A file named only by its suffix has no name to give its dataset.
    with pytest.raises(RejectedFile, match="it is empty"):
        locate(".csv")


def test_accepted_suffixes() -> None:
    assert ACCEPTED_SUFFIXES == (".csv", ".tsv", ".csv.gz", ".tsv.gz")
    assert accepted_suffix("x.CSV.Gz") == ".CSV.Gz"
    assert accepted_suffix("x.csv.bz2") is None


@pytest.mark.parametrize(
    ("name", "delimiter", "compression"),
    [
        ("x.csv", ",", None),
        ("x.tsv", "\t", None),
        ("x.csv.gz", ",", "gzip"),
        ("x.TSV.GZ", "\t", "gzip"),
        (PurePosixPath("sales/x.tsv"), "\t", None),
        ("x.txt", ",", None),
    ],
)
def test_delimiter_and_compression(name: str, delimiter: str, compression: str | None) -> None:
    assert delimiter_for(name) == delimiter
    assert compression_for(name) == compression
