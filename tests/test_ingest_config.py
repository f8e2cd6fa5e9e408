"""The per-dataset reading settings of issue 7: validated at start, turned into one format."""

from __future__ import annotations

import pytest

from lakehoused.config import DatasetOptions, load_config
from lakehoused.errors import ConfigError
from lakehoused.ingest import CsvFormat, format_for


def options(make_config, body: str) -> DatasetOptions:
    return load_config(make_config(datasets=f"[datasets.d]\n{body}")).dataset_options("d")


def refused(make_config, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        options(make_config, body)
    return str(info.value)


def test_every_reading_setting_is_read(make_config):
    got = options(
        make_config,
        'delimiter = ";"\nquote = ""\nescape = "\\\\"\nheader = false\nskip_rows = 2\n'
        'comment = "#"\nencoding = "Windows-1251"\non_bad_rows = "quarantine"\n'
        'converter_memory = "1GiB"',
    )
    assert (got.delimiter, got.quote, got.escape, got.header) == (";", "", "\\", False)
    assert (got.skip_rows, got.comment, got.encoding) == (2, "#", "windows-1251")
    assert (got.on_bad_rows, got.converter_memory) == ("quarantine", "1GiB")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("encoding = 'klingon'", "datasets.d.encoding: must be a Python codec name"),
        ("encoding = 'rot13'", "datasets.d.encoding: must be a Python codec name"),
        ("quote = 'ab'", 'datasets.d.quote: must be one character, or "" for no quoting'),
        ("escape = ''", "datasets.d.escape: must be exactly one character (not a line break)"),
        ("comment = '\\n'", "datasets.d.comment: must be exactly one character"),
        ("delimiter = '§'", "datasets.d.delimiter: must be an ASCII character, got '§'"),
        ("header = 'no'", "datasets.d.header: must be true or false, got 'no'"),
        ("skip_rows = -1", "datasets.d.skip_rows: must be 0-1000000, got -1"),
        ("on_bad_rows = 'skip'", "datasets.d.on_bad_rows: must be one of reject, quarantine"),
        ("converter_memory = '8MB'", "datasets.d.converter_memory: must be a size of at least"),
        ("delimiter = ';'\ncomment = ';'", "datasets.d.comment: ';' is already the delimiter"),
        ('quote = "\'"\nescape = "\'"', None),  # an escape equal to the quote: doubling
    ],
)
def test_bad_reading_settings_name_the_key(make_config, body, message):
    if message is None:
        assert options(make_config, body).escape == "'"
    else:
        assert refused(make_config, body).startswith(message)


def test_format_for_builds_the_whole_reading_format(make_config):
    got = options(make_config, 'quote = "\'"\nnull_values = ["-"]\nconverter_memory = "128MiB"')
    fmt = format_for(got, "sales.tsv.gz")
    assert fmt == CsvFormat(
        delimiter=None,
        default_delimiter="\t",
        quote="'",
        compression="gzip",
        null_values=("-",),
        memory_bytes=128 << 20,
    )
    assert fmt.max_record_bytes == 8 << 20
    assert format_for(DatasetOptions(), "a.csv") == CsvFormat()
