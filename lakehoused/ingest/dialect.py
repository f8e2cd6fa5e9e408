"""How a CSV file is written: the reading options, and the sniffing of what is not set.

`CsvFormat` is what a caller passes to `convert`: the dataset's settings (built by
`format_for`), with None where the file itself should tell. `Dialect` is what was used
in the end, sniffed or set; it is recorded in the `dataset.registered` event.

Sniffing is deliberately timid. The delimiter is chosen among `,` `;` tab `|` `:` from the
first records, and only when one candidate splits every sampled record into the same
number of fields (two or more); the suffix's own delimiter wins any tie. Anything less
clear is rejected with the setting that decides it. Every record of the whole file is then
still verified with the chosen dialect (strict.py), so a wrong sniff can only reject a file,
never alter it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from lakehoused import names
from lakehoused.config import DatasetOptions, size_bytes
from lakehoused.errors import RejectedFile

CANDIDATES = (",", ";", "\t", "|", ":")
SNIFF_BYTES = 64 << 10  # the first records this long decide the delimiter
SNIFF_RECORDS = 100
_SEP_LINE = re.compile(rb"sep=([^\r\n])(\r\n|\n|\r)")
_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe", ":": "colon"}


@dataclass(frozen=True)
class CsvFormat:
    """How to read one file: the dataset's settings; None where the file should tell.

    Plain, frozen and picklable: it crosses into a converter process as it is.
    """

    delimiter: str | None = None  # None: sniffed, else `default_delimiter`
    default_delimiter: str = ","  # the file suffix's: tab for .tsv
    quote: str = '"'  # "" = no quoting: quote characters are ordinary
    escape: str | None = None  # None = a quote inside a quoted value is doubled
    header: bool | None = None  # None: the first record names the columns (checked)
    skip_rows: int = 0  # lines above the header to skip
    comment: str | None = None  # lines starting with this character are skipped
    encoding: str = "utf-8"  # any Python codec; utf-8 also honours UTF-16/32 BOMs
    compression: str | None = None  # "gzip" or None
    null_values: tuple[str, ...] = ()  # tokens read as NULL besides the empty cell
    on_bad_rows: str = "reject"  # "reject" | "quarantine"
    memory_bytes: int = 256 << 20  # the converter's budget: blocks, record and group sizes
    dataset: str = "<name>"  # for advice: the settings to change are datasets.<name>.*
    # (convert() fills it in from its `dataset` argument)

    def setting(self, key: str, value: str | None = None) -> str:
        """A setting to change, as a person would write it in config.toml."""
        name = f"datasets.{self.dataset}.{key}"
        return name if value is None else f"{name} = {value}"

    @property
    def max_record_bytes(self) -> int:
        """The longest record accepted: 1/16 of the memory budget (16 MiB by default)."""
        return self.memory_bytes // 16


def format_for(options: DatasetOptions, file_name: str | PurePath) -> CsvFormat:
    """The reading options for one file of a dataset: its settings and its name's suffix.

    `file_name` is the name the file arrived with (a staged copy may have another): its
    suffix says the default delimiter and the compression.
    """
    return CsvFormat(
        delimiter=options.delimiter,
        default_delimiter=names.delimiter_for(file_name),
        quote=options.quote,
        escape=None if options.escape == options.quote else options.escape,
        header=options.header,
        skip_rows=options.skip_rows,
        comment=options.comment,
        encoding=options.encoding,
        compression=names.compression_for(file_name),
        null_values=tuple(options.null_values),
        on_bad_rows=options.on_bad_rows,
        memory_bytes=size_bytes(options.converter_memory),
    )


@dataclass(frozen=True)
class Dialect:
    """The dialect a file was read with, and where each choice came from."""

    delimiter: str
    quote: str
    escape: str | None
    header: bool
    skip_rows: int
    comment: str | None
    encoding: str
    sep_line: bool = False  # an Excel "sep=X" first line named the delimiter
    delimiter_from: str = "setting"  # setting | sniffed | suffix | sep line
    line_endings: str = "none"  # LF | CRLF | CR | mixed | none
    bom: str | None = None

    def to_json(self) -> dict:
        """The dialect as recorded in the dataset.registered event."""
        return {
            "delimiter": self.delimiter,
            "delimiter_from": self.delimiter_from,
            "quote": self.quote,
            "escape": self.escape,
            "header": self.header,
            "skip_rows": self.skip_rows,
            "comment": self.comment,
            "encoding": self.encoding,
            "bom": self.bom,
            "sep_line": self.sep_line,
            "line_endings": self.line_endings,
        }


def sep_line(head: bytes) -> tuple[str, int] | None:
    """Excel's `sep=X` first line: (X, its length in bytes), or None."""
    match = _SEP_LINE.match(head)
    if match is None:
        return None
    return match.group(1).decode("utf-8", "replace"), match.end()


def choose_delimiter(
    fmt: CsvFormat,
    sample: str,
    complete: bool,
    first_line: int = 1,
    columns: Sequence[str] = (),
) -> tuple[str, str]:
    """The delimiter for a file, and where it came from (setting, sniffed or suffix).

    `sample` is the text of the first records after any skipped lines; `complete` says
    whether it is the whole file (else its last line may be cut short and is ignored), and
    `first_line` is the file's line the sample starts on. `columns` are the dataset's: a
    delimiter that splits the first record into all of them is the one.
    """
    if fmt.delimiter is not None:
        return fmt.delimiter, "setting"
    if not complete:
        # The last line may be cut in the middle; a record is never judged on half of it.
        cut = max(sample.rfind("\n"), sample.rfind("\r"))
        sample = sample[: cut + 1] if cut >= 0 else ""
    if columns and fmt.header is not False:
        named = [d for d in CANDIDATES if set(columns) <= set(_first_record(sample, d, fmt))]
        if len(named) == 1:
            return named[0], "sniffed"
    counted = {
        candidate: _records(sample, candidate, fmt)
        for candidate in CANDIDATES
        if candidate not in (fmt.quote, fmt.escape, fmt.comment)
    }
    fits = {d: f for d, r in counted.items() if (f := _consistent_from(r)) and f[2] >= 2}
    clean = [d for d, f in fits.items() if f[0] == 0]
    mostly = [d for d, r in counted.items() if _mostly(r)]
    if fmt.default_delimiter in clean:
        return fmt.default_delimiter, "sniffed"
    if len(clean) == 1:
        return clean[0], "sniffed"
    if len(clean) > 1:
        raise _ambiguous(fmt, clean)
    if fmt.default_delimiter in mostly:
        # Most records agree: the others are bad records, which the check reports by line.
        return fmt.default_delimiter, "sniffed"
    if fits:
        # Only a title or notes above the header stand between a delimiter and a clean fit.
        delimiter, (_, line, fields) = min(fits.items(), key=lambda item: item[1][0])
        advice = fmt.setting("skip_rows", str(fmt.skip_rows + line - 1))
        if delimiter != fmt.default_delimiter:
            advice += f" and {fmt.setting('delimiter', _toml_char(delimiter))}"
        line += first_line - 1
        raise RejectedFile(
            f"line {line} starts {fields} fields separated by {_NAMES[delimiter]}s, but "
            f"the line(s) above it do not: if they are a title or notes above the header, "
            f"set {advice}",
            line=line,
        )
    if len(mostly) == 1:
        return mostly[0], "sniffed"
    if len(mostly) > 1:
        raise _ambiguous(fmt, mostly)
    return fmt.default_delimiter, "suffix"


def _ambiguous(fmt: CsvFormat, delimiters: list[str]) -> RejectedFile:
    options = " or ".join(f"{_NAMES[d]} ({d!r})" for d in delimiters)
    return RejectedFile(
        f"cannot tell the delimiter: {options} each split the first records into the same "
        f"number of fields; set {fmt.setting('delimiter')} to the right one",
    )


def _mostly(records: list[tuple[int, int]] | None) -> bool:
    """Whether at least 4 in 5 of 3+ records have the same number of fields, 2 or more."""
    if not records or len(records) < 3:
        return False
    counts = [fields for _, fields in records]
    common = max(set(counts), key=counts.count)
    return common >= 2 and counts.count(common) * 5 >= len(counts) * 4


def _toml_char(char: str) -> str:
    return '"\\t"' if char == "\t" else f'"{char}"'


def _reader(sample: str, delimiter: str, fmt: CsvFormat) -> Iterator[list[str]]:
    return csv.reader(
        io.StringIO(sample, newline=""),
        delimiter=delimiter,
        quotechar=fmt.quote or None,
        quoting=csv.QUOTE_MINIMAL if fmt.quote else csv.QUOTE_NONE,
        escapechar=fmt.escape,
        doublequote=True,
    )


def _first_record(sample: str, delimiter: str, fmt: CsvFormat) -> list[str]:
    if delimiter in (fmt.quote, fmt.escape, fmt.comment):
        return []
    try:
        return next((row for row in _reader(sample, delimiter, fmt) if row), [])
    except csv.Error:
        return []


def _records(sample: str, delimiter: str, fmt: CsvFormat) -> list[tuple[int, int]] | None:
    """(first line, fields) of each record of the sample, read leniently (a bad record
    must not hide the delimiter of the good ones: the strict check finds it later)."""
    reader = _reader(sample, delimiter, fmt)
    records = []
    line = 1  # the sample's first line
    try:
        for row in reader:
            is_comment = fmt.comment is not None and row and row[0].startswith(fmt.comment)
            if row and not is_comment:
                records.append((line, len(row)))
            line = reader.line_num + 1
            if len(records) >= SNIFF_RECORDS:
                break
    except csv.Error:
        return None
    return records


def _consistent_from(records: list[tuple[int, int]] | None) -> tuple[int, int, int] | None:
    """(k, line, n): from record k (on that line) on, every record has n fields; or None."""
    if not records:
        return None
    counts = [fields for _, fields in records]
    last = counts[-1]
    first = len(counts)
    while first > 0 and counts[first - 1] == last:
        first -= 1
    # A clean fit from the first record, or a short preamble over at least 3 regular records:
    # lines without the delimiter (a title, notes), not a header short of a field or two.
    preamble = counts[:first]
    if first == 0 or (first <= 10 and len(counts) - first >= 3 and max(preamble) == 1):
        return first, records[first][0], last
    return None
