"""Reading a CSV file's shape: its format, its header, and what exactly is wrong with it.

The fast path (DuckDB, in convert.py) only says *that* a file is bad. When it does, the
slow, exact readers here find *where*: the byte offset of the first invalid UTF-8 sequence,
the line of a ragged row or of a quote that never closes. They run only on rejected files.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lakehoused.errors import RejectedFile

# A single value may be long (free text); the default limit of 128 KiB is too small.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

_CHUNK = 1 << 20


@dataclass(frozen=True)
class CsvFormat:
    """How to read one file: its delimiter, encoding, compression and extra NULL tokens."""

    delimiter: str = ","
    encoding: str = "utf-8"
    compression: str | None = None
    null_values: tuple[str, ...] = ()

    @property
    def python_encoding(self) -> str:
        """The codec name for Python; utf-8-sig drops a byte order mark."""
        return {"utf-8": "utf-8-sig", "utf-16": "utf-16", "latin-1": "latin-1"}[self.encoding]


@contextmanager
def open_bytes(path: Path, fmt: CsvFormat) -> Iterator[BinaryIO]:
    """The file's (decompressed) bytes."""
    with open(path, "rb") as raw:
        if fmt.compression == "gzip":
            with gzip.GzipFile(fileobj=raw) as gz:
                yield gz  # type: ignore[misc]
        else:
            yield raw


def _reader(text: io.TextIOBase, fmt: CsvFormat) -> csv.Reader:
    return csv.reader(text, delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=True)


def header_names(raw: list[str]) -> list[str]:
    """Column names from a header row: blank names become column_N, repeats get _2, _3.

    Repeats are found case-insensitively, because SQL identifiers are.
    """
    names: list[str] = []
    seen: set[str] = set()
    for position, name in enumerate(raw, start=1):
        name = name.strip() or f"column_{position}"
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        names.append(candidate)
    return names


def read_header(path: Path, fmt: CsvFormat) -> list[str]:
    """The file's column names; RejectedFile for an empty file or an unreadable header."""
    try:
        with open_bytes(path, fmt) as data:
            text = io.TextIOWrapper(data, encoding=fmt.python_encoding, newline="")
            row = next(_reader(text, fmt), None)
    except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
        raise diagnose(path, fmt, expected_fields=None) or RejectedFile(
            f"cannot read the header: {e}"
        ) from e
    if row is None:
        raise RejectedFile("the file is empty: a header row naming the columns is required")
    if not any(cell.strip() for cell in row) and len(row) <= 1:
        raise RejectedFile("the first line is blank: a header row naming the columns is required")
    return header_names(row)


def find_invalid_utf8(data: BinaryIO) -> tuple[int, int, bytes] | None:
    """(byte offset, line, offending bytes) of the first invalid UTF-8 sequence, or None."""
    offset = 0  # bytes before `carry`
    line = 1
    carry = b""
    while True:
        chunk = data.read(_CHUNK)
        buf = carry + chunk
        try:
            buf.decode("utf-8")
            valid = len(buf)
        except UnicodeDecodeError as e:
            # A sequence cut by the chunk boundary is only bad if the file ends there.
            if e.reason == "unexpected end of data" and chunk:
                valid = e.start
            else:
                bad = buf[e.start : e.end]
                return offset + e.start, line + buf.count(b"\n", 0, e.start), bad
        line += buf.count(b"\n", 0, valid)
        offset += valid
        carry = buf[valid:]
        if not chunk:
            return None


def diagnose(path: Path, fmt: CsvFormat, expected_fields: int | None) -> RejectedFile | None:
    """Find exactly what is wrong with a file the fast reader refused; None if nothing is."""
    try:
        if fmt.encoding == "utf-8":
            with open_bytes(path, fmt) as data:
                found = find_invalid_utf8(data)
            if found:
                offset, line, bad = found
                return RejectedFile(
                    f"not valid UTF-8 at byte offset {offset} (line {line}): "
                    f"byte(s) {bad.hex(' ')}; save the file as UTF-8, or name its encoding "
                    'in the dataset\'s config (encoding = "latin-1")',
                    byte_offset=offset,
                    line=line,
                )
        with open_bytes(path, fmt) as data:
            text = io.TextIOWrapper(data, encoding=fmt.python_encoding, newline="")
            return _find_bad_row(_reader(text, fmt), expected_fields)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as e:
        return RejectedFile(f"cannot read the file: {e}")


def _find_bad_row(reader: csv.Reader, expected: int | None) -> RejectedFile | None:
    start = 1
    try:
        for row in reader:
            if expected is None:
                expected = len(row)  # the header
            elif not row and expected > 1:
                pass  # a blank line carries no row (DuckDB skips it too)
            elif len(row) != expected:
                return RejectedFile(
                    f"line {start}: expected {expected} fields, got {len(row)}; "
                    "every row needs as many fields as the header (quote values that "
                    "contain the delimiter)",
                    line=start,
                )
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" in str(e) or "EOF" in str(e):
            return RejectedFile(
                f"line {start}: a quoted value opened on this line is never closed",
                line=start,
            )
        return RejectedFile(f"line {start}: {e}", line=start)
    return None
