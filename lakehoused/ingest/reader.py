"""Reading a CSV file once: its dialect, its header, then all-VARCHAR Arrow tables of its rows.

One read of the file. A thread decodes the text, runs the strict check (strict.py) on
each run of whole records and validates its UTF-8; parser threads hand exactly those bytes
to pyarrow's CSV parser, which checks every record's field count and returns the values,
taken in the file's order. Where the check counted the records (anything but the fast
path), the parser must return as many, or the file is not read at all. The header is
parsed by the same parser with the same options. A parser error is never shown as it is:
the check finds the line and says what is wrong there.
"""

from __future__ import annotations

import codecs
import functools
import queue
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from lakehoused.errors import RejectedFile
from lakehoused.ingest import types
from lakehoused.ingest.dialect import SNIFF_BYTES, CsvFormat, Dialect, choose_delimiter, sep_line
from lakehoused.ingest.strict import BadRecord, InvalidUtf8, Records, Scanner
from lakehoused.ingest.text import Utf8Text, invalid_utf8_error, open_bytes

_DONE = object()
PARSERS = 2  # parser threads: the parse is the longest stage of the reading
_NO_HEADER = "false"


def _valid_utf8(data: memoryview) -> bool:
    """Whether a run of whole records is valid UTF-8 (Arrow's validator, on the whole run:
    a run ends with a record, so it never cuts a character)."""
    if not data:
        return True
    offsets = pa.py_buffer(struct.pack("<ii", 0, len(data)))
    run = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        run.cast(pa.string())
    except pa.ArrowInvalid:
        return False
    return True


def header_names(raw: list[str]) -> list[str]:
    """Column names from a header row: blank names become column_N, repeats get _2, _3.

    Names are kept exactly as written otherwise (spaces included). Repeats are found
    case-insensitively, because SQL identifiers are.
    """
    names: list[str] = []
    seen: set[str] = set()
    for position, name in enumerate(raw, start=1):
        name = name if name.strip() else f"column_{position}"
        candidate, n = name, 1
        while candidate.lower() in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate.lower())
        names.append(candidate)
    return names


class CsvReader:
    """One CSV file, opened: its dialect and column names, then its rows as Arrow tables."""

    def __init__(self, path: Path, fmt: CsvFormat, columns: Sequence[str] = ()) -> None:
        self.path, self.fmt, self._columns = path, fmt, columns
        self._stack = ExitStack()
        data, self.position = self._stack.enter_context(open_bytes(path, fmt.compression))
        self.bytes_total = max(path.stat().st_size, 1)
        self.text = Utf8Text(data, fmt)
        self._chunks = self.text.chunks()
        self._converts: dict[tuple[int, bool], pacsv.ConvertOptions] = {}
        self._line_endings = {"LF": 0, "CRLF": 0, "CR": 0}
        self._cr_at_end = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the file, and stop the reading threads if they still run."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        for thread in getattr(self, "_threads", ()):
            thread.join()
        self._stack.close()

    def __enter__(self) -> CsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the preamble: BOM, sep= line, skipped lines, the sniff --------------------------

    def _next_chunk(self) -> bytes:
        try:
            chunk = next(self._chunks, b"")
        except InvalidUtf8:
            raise self._utf8_error() from None
        self._count_line_endings(chunk)
        return chunk

    def _open(self) -> None:
        fmt = self.fmt
        buf = self._next_chunk()
        if not buf:
            raise RejectedFile("the file is empty: a header row naming the columns is required")
        line = 1
        delimiter, delimiter_from, has_sep = fmt.delimiter, "setting", False
        if (sep := sep_line(buf)) is not None:
            has_sep, line, buf = True, 2, buf[sep[1] :]
            if delimiter is None:
                delimiter, delimiter_from = sep[0], "sep line"
        eof = False
        for _ in range(fmt.skip_rows):
            buf, eof, dropped = self._drop_line(buf, eof)
            line += dropped
            if not buf and eof:
                raise RejectedFile(
                    f"the file has only {line - 1} line(s): "
                    f"{fmt.setting('skip_rows', str(fmt.skip_rows))} skips all of them"
                )
        while len(buf) < SNIFF_BYTES and not eof:
            more = self._next_chunk()
            eof = not more
            buf += more
        if delimiter is None:
            decoder = codecs.getincrementaldecoder("utf-8")("strict")
            complete = eof and len(buf) <= SNIFF_BYTES
            try:
                # A character cut by the end of the sample is not an error.
                sample = decoder.decode(buf[:SNIFF_BYTES], final=complete)
            except UnicodeDecodeError:
                raise self._utf8_error() from None
            delimiter, delimiter_from = choose_delimiter(fmt, sample, complete, line, self._columns)
        self.fmt = fmt = replace(fmt, delimiter=delimiter)
        self.scanner = Scanner(fmt, first_line=line)
        self.scanner.sniffed = delimiter_from != "setting"
        self.scanner.sep_line = has_sep
        self._first, self._eof = buf, eof
        self.dialect = Dialect(
            delimiter=delimiter,
            quote=fmt.quote,
            escape=fmt.escape,
            header=fmt.header is not False,
            skip_rows=fmt.skip_rows,
            comment=fmt.comment,
            encoding=self.text.name,
            sep_line=has_sep,
            delimiter_from=delimiter_from,
            bom=self.text.bom,
        )
        self.names: list[str] | None = None
        self._start()
        names = next(self._items(self._queue), None)
        assert isinstance(names, list), "the check thread ends with a rejection or the names"
        self.names = names

    def _drop_line(self, buf: bytes, eof: bool) -> tuple[bytes, bool, bool]:
        """`buf` less its first line (pulling chunks until the line ends), the end of the
        file reached or not, and whether there was a line to drop."""
        while True:
            lf, cr = buf.find(b"\n"), buf.find(b"\r")
            ends = [i for i in (lf, cr) if i >= 0]
            if ends and not (min(ends) == cr and cr == len(buf) - 1 and not eof):
                end = min(ends)
                if end == cr and buf[cr + 1 : cr + 2] == b"\n":
                    end += 1
                return buf[end + 1 :], eof, True
            if eof:
                return b"", True, bool(buf)  # a last line without a line break
            more = self._next_chunk()
            eof = not more
            buf += more

    def _count_line_endings(self, chunk: bytes) -> None:
        """Note which line endings the text uses (only whether, not how often)."""
        used = self._line_endings
        if self._cr_at_end and chunk[:1] == b"\n":
            used["CRLF"] = 1  # a CRLF cut in two by the chunk boundary
            chunk = chunk[1:]
        elif self._cr_at_end:
            used["CR"] = 1
        self._cr_at_end = chunk[-1:] == b"\r"
        if b"\r" not in chunk:
            used["LF"] |= b"\n" in chunk
            return
        crlf = chunk.count(b"\r\n")
        used["CRLF"] |= crlf > 0
        used["LF"] |= chunk.count(b"\n") > crlf
        # A CR at the very end may be half of a CRLF: the next chunk decides.
        used["CR"] |= chunk.count(b"\r") - crlf - self._cr_at_end > 0

    def line_endings(self) -> str:
        """LF, CRLF, CR, mixed or none: what ended the file's lines."""
        used = [name for name, count in self._line_endings.items() if count]
        return used[0] if len(used) == 1 else "mixed" if used else "none"

    def _utf8_error(self) -> RejectedFile:
        return invalid_utf8_error(self.path, self.fmt) or RejectedFile(
            "the file is not valid UTF-8; save it as UTF-8 or set " + self.fmt.setting("encoding")
        )

    # -- the threads: check, then parse ----------------------------------------------------

    def _start(self) -> None:
        self._stop = threading.Event()
        self._checked: queue.Queue = queue.Queue(maxsize=8)
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._threads = [
            threading.Thread(target=self._check, name="csv-check", daemon=True),
            threading.Thread(target=self._parse_all, name="csv-parse", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _put(self, into: queue.Queue, item: object) -> bool:
        while not self._stop.is_set():
            try:
                into.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _check(self) -> None:
        """Thread: the text as checked runs of whole records; _DONE last, or the error."""
        try:
            chunk, eof = self._first, self._eof
            self._first = b""
            while not self._stop.is_set():
                records = self.scanner.feed(chunk, final=eof)
                if records is None:
                    pass
                elif not self.text.transcoded and not _valid_utf8(records.data):
                    raise InvalidUtf8
                elif not self._put(self._checked, records):
                    return
                if eof:
                    break
                chunk = self._next_chunk()
                eof = not chunk
            self._put(self._checked, _DONE)
        except InvalidUtf8:
            self._put(self._checked, self._utf8_error())
        except BaseException as e:  # handed on, and raised in the reading thread
            self._put(self._checked, e)

    def _parse_all(self) -> None:
        """Thread: each checked run handed to a parser, in order; the names first, _DONE
        last, or the error. Two parsers work side by side (pyarrow releases the GIL); the
        reading thread takes their results in the file's order."""
        pool = ThreadPoolExecutor(max_workers=PARSERS, thread_name_prefix="csv-parse")
        try:
            for records in self._items(self._checked):
                if self.names is None:
                    if not records.rows:
                        continue  # blank lines or comments before the header
                    item: object = self._parsed(records)  # the header: names first
                else:
                    item = pool.submit(self._parsed, records)
                if not self._put(self._queue, item):
                    return
            if self.names is None:
                raise RejectedFile(
                    "the file holds no record: a header row naming the columns is required"
                )
            self._put(self._queue, _DONE)
        except BaseException as e:
            self._put(self._queue, e)
        finally:
            # The runs already handed on are still to be read, unless the reading stopped.
            pool.shutdown(wait=False, cancel_futures=self._stop.is_set())

    def _parsed(self, records: Records) -> tuple[pa.Table | None, list[BadRecord]]:
        """One run as an all-VARCHAR table (the header taken off the first), and its bad rows."""
        data, rows = records.feed, records.rows
        if self.names is None and rows:
            data, rows = self._read_header(records)
            self._put(self._queue, self.names)
        if rows == 0 or not data:
            return None, records.bad
        return self._parse_run(records, data, rows).rename_columns(self.names), records.bad

    def _items(self, source: queue.Queue) -> Iterator[object]:
        while True:
            try:
                item = source.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return  # closed early: the producer has stopped
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- parsing --------------------------------------------------------------------------

    def _parse(self, data: bytes | memoryview, columns: int, *, nulls: bool) -> pa.Table:
        names = [f"f{i}" for i in range(columns)]
        # One block per call: with the data ending in a line break the block splits there,
        # so quoted line breaks are parsed right either way, and the plain split is cheaper.
        # (A run always ends with a record; the last one of a file may not.)
        newlines = bytes(data[-1:]) != b"\n"
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 16)
            ),
            parse_options=self._parse_options[newlines],
            convert_options=self._convert_options(columns, nulls),
        )

    @functools.cached_property
    def _parse_options(self) -> dict[bool, pacsv.ParseOptions]:
        fmt = self.fmt
        return {
            newlines: pacsv.ParseOptions(
                delimiter=fmt.delimiter,
                quote_char=fmt.quote or False,
                double_quote=True,
                escape_char=fmt.escape or False,
                newlines_in_values=newlines,
                # With one column a blank line is an empty value; with more, it is no record.
                ignore_empty_lines=(self.scanner.expected or 1) != 1,
            )
            for newlines in (False, True)
        }

    def _convert_options(self, columns: int, nulls: bool) -> pacsv.ConvertOptions:
        # Built once per reader: with thousands of columns the type map is not free.
        key = (columns, nulls)
        if key not in self._converts:
            self._converts[key] = pacsv.ConvertOptions(
                column_types=dict.fromkeys((f"f{i}" for i in range(columns)), pa.string()),
                null_values=["", *self.fmt.null_values] if nulls else [],
                strings_can_be_null=nulls,
                quoted_strings_can_be_null=nulls,
                # Checked once per run by the check thread (_valid_utf8): cheaper than per value.
                check_utf8=False,
            )
        return self._converts[key]

    def _parse_run(self, records: Records, data: bytes | memoryview, rows: int | None) -> pa.Table:
        """Parse one run; the parser and the check must agree on every record."""
        columns = self.scanner.expected or 1
        try:
            table = self._parse(data, columns, nulls=True) if data else None
        except (pa.ArrowInvalid, pa.ArrowException) as e:
            raise self._diagnose(records, str(e)) from None
        got = table.num_rows if table is not None else 0
        if rows is not None and got != rows:
            raise RuntimeError(
                f"the CSV parser read {got} records where the strict check found {rows}, "
                f"from line {records.first_line}"
            )
        return table

    def _diagnose(self, records: Records, message: str) -> RejectedFile:
        """The parser refused a run the check passed: find the line, in our own words."""
        if "UTF8" in message or "UTF-8" in message:
            return self._utf8_error()
        records = records.full()
        counts = records.field_counts()
        wrong = (counts != self.scanner.expected).nonzero()[0]
        if not wrong.size:
            raise RuntimeError(f"the CSV parser refused a run the strict check passed: {message}")
        return self.scanner.count_rejection(records, int(wrong[0]), counts)

    def _read_header(self, first: Records) -> tuple[bytes | memoryview, int]:
        """Set the column names from the first record, parsed like every other one (or to
        column_N); return what of the run is left to parse, and its records."""
        self._header_line = int(first.line_of(int(first.starts[0])))
        self.scanner.header_line = self._header_line
        columns = self.scanner.expected or 1
        if self.fmt.header is False:
            self.names = [f"column_{i}" for i in range(1, columns + 1)]
            return first.feed, first.rows
        start, end = int(first.starts[0]), int(first.ends[0])
        try:
            table = self._parse(bytes(first.data[start:end]) + b"\n", columns, nulls=False)
        except (pa.ArrowInvalid, pa.ArrowException) as e:
            raise self._diagnose(first, str(e)) from None
        raw = [table.column(i)[0].as_py() for i in range(columns)]
        self._check_header(raw)
        self.names = header_names(raw)
        assert first.header_next is not None
        return first.feed[first.header_next :], first.rows - 1

    def _check_header(self, raw: list[str]) -> None:
        """A first record of values only, no names, is refused unless header is set."""
        if self.fmt.header is not None:
            return
        if all(types.classify_value(name) not in (types.TEXT, types.EMPTY) for name in raw):
            shown = ", ".join(raw[:5]) + (", ..." if len(raw) > 5 else "")
            raise RejectedFile(
                f"line {self._header_line}: the header row holds only values ({shown}), no "
                f"names: if the file has no header row, set "
                f"{self.fmt.setting('header', _NO_HEADER)} (columns column_1, column_2, ...); "
                f"if these are the names, set {self.fmt.setting('header', 'true')}",
                line=self._header_line,
            )

    def tables(self) -> Iterator[tuple[pa.Table | None, list[BadRecord]]]:
        """Each run's rows as an all-VARCHAR table (None if it has none), and its bad records."""
        for item in self._items(self._queue):
            yield item.result() if isinstance(item, Future) else item  # type: ignore[misc]
        self.dialect = replace(self.dialect, line_endings=self.line_endings())

    def progress(self) -> float:
        """How far into the file the reading is, 0 to 1."""
        return min(self.position() / self.bytes_total, 1.0)
