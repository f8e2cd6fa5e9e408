"""The strict structure of a CSV stream: records, quotes, field counts and line numbers.

Vectorised over the bytes the parser is about to read, so that what the parser accepts is
exactly RFC 4180 plus the dialect's documented options:

- a quote opens a value only at its start (after a delimiter or a line break); a quote
  anywhere else in an unquoted value is refused (Python's csv and pyarrow would keep it as
  a character, which silently hides a missing delimiter or a space before a quote);
- a closing quote is followed by a delimiter, a line break, the end of the file, or a
  second quote (the doubled quote of RFC 4180) — nothing else;
- a quote opened is closed before the end of the file;
- with `escape`, the byte after an escape character is literal (as in Python's csv);
- records end at LF, CRLF or a lone CR outside quotes, mixed freely; lines are counted the
  way an editor counts them, quoted line breaks included;
- comment lines (`comment`) are cut out; blank lines carry no record.

The parser (pyarrow) checks every record's field count itself; here field counts are
computed only for the header, for `on_bad_rows = "quarantine"` (to cut bad records out
before the parser sees them) and to find the line of a record the parser refused.

The fast path (LF or CRLF line ends, no escape, comment or quarantine: most files) locates only
the quote characters and the last line break of a run; every quote is still checked.
Anything else, and any error, takes the full analysis, which finds every record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lakehoused.errors import RejectedFile
from lakehoused.ingest.dialect import CsvFormat

LF, CR = 10, 13
_NONE = np.empty(0, np.int64)
_Q = '"'
_NO_QUOTE, _BACKSLASH, _QUARANTINE = '""', '"\\\\"', '"quarantine"'


class InvalidUtf8(Exception):
    """A record that must be stored as text is not valid UTF-8 (the file's fault)."""


@dataclass(frozen=True)
class BadRecord:
    """A record kept aside by on_bad_rows = "quarantine": verbatim, with line and reason."""

    line: int
    text: str
    reason: str


@dataclass
class Records:
    """A run of whole records, checked; `feed` is what the parser reads of them."""

    data: memoryview  # a view: runs are not copied
    feed: memoryview | bytes
    first_line: int
    starts: np.ndarray  # kept records (not blank, comment or bad): their first byte in data
    ends: np.ndarray  # and the end of their content (before the line break)
    breaks: np.ndarray  # every line break in data, for line numbers
    bad: list[BadRecord] = field(default_factory=list)
    header_next: int | None = None  # in feed: where the record after the header starts
    outside: np.ndarray | None = None  # delimiters outside quotes, found when first needed
    run: _Run | None = field(default=None, repr=False)
    counted: bool = True  # False: checked on the fast path, records not counted (see full)
    analyse: Callable[[], _Run] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int | None:
        """Records the parser must return for this run; None if they were not counted."""
        return len(self.starts) if self.counted else None

    def full(self) -> Records:
        """These records with every record found and counted (to say where one is wrong)."""
        if self.counted:
            return self
        assert self.analyse is not None
        return self.analyse().records()

    def line_of(self, offset: int | np.ndarray) -> int | np.ndarray:
        """The editor's line number of a byte offset in data."""
        return self.first_line + np.searchsorted(self.breaks, offset)

    def field_counts(self) -> np.ndarray:
        """Fields of each kept record (delimiters outside quotes + 1)."""
        if self.outside is None:
            assert self.run is not None
            self.outside = self.run.delimiters_outside()
        lo = np.searchsorted(self.outside, self.starts)
        hi = np.searchsorted(self.outside, self.ends)
        return hi - lo + 1


class Scanner:
    """Splits a UTF-8 CSV stream into checked runs of whole records."""

    def __init__(self, fmt: CsvFormat, first_line: int = 1) -> None:
        assert fmt.delimiter is not None
        self.fmt = fmt
        self.delim = ord(fmt.delimiter)
        self.quote = ord(fmt.quote) if fmt.quote else None
        self.escape = ord(fmt.escape) if fmt.escape else None
        self.comment = ord(fmt.comment) if fmt.comment else None
        self.quarantine = fmt.on_bad_rows == "quarantine"
        self.tail = b""
        self.line = first_line  # line of the first byte of `tail`
        self.expected: int | None = None  # fields per record: the first record's
        # For messages: where the header is, and how the dialect was chosen.
        self.header_line = first_line
        self.sniffed = False
        self.sep_line = False

    def feed(self, chunk: bytes, final: bool) -> Records | None:
        """The whole records completed by `chunk`; None while the first is still open."""
        buf = self.tail + chunk if self.tail else chunk
        if not buf:
            return None
        if self._fast_path_fits(buf):
            records = self._fast(buf, final)
            if records is not None:
                return records
        run = _Run(self, buf, final)
        if run.cut == 0:
            if len(buf) > self.fmt.max_record_bytes:
                raise run.too_long(0, len(buf))
            self.tail = buf
            return None
        records = run.records()
        self.tail = buf[run.cut :]
        self.line = int(records.line_of(run.cut))
        return records

    def count_rejection(self, records: Records, i: int, counts: np.ndarray) -> RejectedFile:
        """The file's rejection for kept record `i`, whose field count is wrong."""
        assert records.run is not None
        fmt, expected, count = self.fmt, self.expected or 0, int(counts[i])
        start, end = int(records.starts[i]), int(records.ends[i])
        line = int(records.line_of(start))
        hints = []
        if count > expected and self.sniffed:
            hints.append(
                f"quote values that contain the delimiter ({fmt.delimiter!r}), or set "
                f"{fmt.setting('delimiter')} if it is another character"
            )
        elif count > expected:
            hints.append("quote values that contain the delimiter")
        following = counts[i : i + 4]
        if expected == 1 and following.size >= 3 and (following == count).all():
            # A one-field "header" above rows that agree with each other: a title line.
            hints.append(
                f"if the line(s) above line {line} are a title or notes, set "
                f"{fmt.setting('skip_rows', str(line - 1 - int(self.sep_line)))}"
            )
        if hint := comment_hint(fmt, bytes(records.data[start : start + 1])):
            hints.append(hint.removeprefix("; or "))
        hints.append(records.run.quarantine_hint().removeprefix("; or "))
        reason = records.run.count_reason(start, end, count)
        return RejectedFile(
            f"line {line}: {reason}; every record needs as many fields as the header "
            f"(line {self.header_line}): " + "; or ".join(hints),
            line=line,
        )

    def _fast_path_fits(self, buf: bytes) -> bool:
        """Whether only quotes need checking here: the header is read, there is more than
        one column, lines end with LF or CRLF (no lone CR), and no escape, comment or
        quarantine is set."""
        if (
            self.expected is None
            or self.expected == 1
            or self.escape is not None
            or self.comment is not None
            or self.quarantine
        ):
            return False
        if b"\r" not in buf:
            return True
        a = np.frombuffer(buf, np.uint8)
        cr = np.flatnonzero(a == CR)
        return bool(cr[-1] + 1 < a.size and (a[cr + 1] == LF).all())

    def _fast(self, buf: bytes, final: bool) -> Records | None:
        """Check every quote of a run found with LF positions alone; the parser counts
        fields. None when the run needs the full analysis (an error to report exactly, or
        no whole record yet)."""
        a = np.frombuffer(buf, np.uint8)
        q = _NONE
        if self.quote is not None and bytes([self.quote]) in buf:
            q = np.flatnonzero(a == self.quote)
        if final:
            cut = len(buf)
        else:
            end = buf.rfind(b"\n")
            while end >= 0:
                opened = int(np.searchsorted(q, end))
                if opened % 2 == 0:
                    break
                # Inside quotes (an odd number of quotes before it): the record ends, at
                # the latest, before the quote that opened the value holding this line break.
                end = buf.rfind(b"\n", 0, int(q[opened - 1]))
            if end < 0:
                return None
            cut = end + 1
        q = q[q < cut]
        if _quote_errors(a, q, len(buf), self.delim, _NONE):
            return None  # the full analysis finds the line and says what is wrong
        data = memoryview(buf)[:cut]
        line = self.line
        records = Records(
            data=data,
            feed=data,
            first_line=self.line,
            starts=_NONE,
            ends=_NONE,
            breaks=_NONE,
            counted=False,
            analyse=lambda: _Run(self, buf, final, first_line=line),
        )
        self.tail = buf[cut:]
        self.line += int(np.count_nonzero(a[:cut] == LF))  # faster than bytes.count
        return records


class _Run:
    """The analysis of one buffer that starts at a record start, outside quotes."""

    def __init__(
        self, scanner: Scanner, buf: bytes, final: bool, first_line: int | None = None
    ) -> None:
        self.s, self.buf, self.final = scanner, buf, final
        self.first_line = scanner.line if first_line is None else first_line
        a = self.a = np.frombuffer(buf, np.uint8)
        n = self.n = a.size
        self.esc = self._escaped()
        lf = np.flatnonzero(a == LF)
        if b"\r" in buf:
            cr = np.flatnonzero(a == CR)
            follows = np.zeros(cr.size, bool)
            inner = cr + 1 < n
            follows[inner] = a[cr[inner] + 1] == LF
            # A CR that ends the buffer may be half of a CRLF: undecided until more comes.
            lone = cr[~follows & (inner | final)]
            self.breaks = np.union1d(lf, lone)
        else:
            lone = _NONE
            self.breaks = lf
        q = _NONE
        if scanner.quote is not None and bytes([scanner.quote]) in buf:
            q = np.flatnonzero(a == scanner.quote)
        if self.esc.size:
            q = np.setdiff1d(q, self.esc, assume_unique=True)
            lf = np.setdiff1d(lf, self.esc, assume_unique=True)
            lone = np.setdiff1d(lone, self.esc, assume_unique=True)
        self.q, self.lf, self.lone = q, lf, lone
        self.terms = self._terminators()
        if scanner.comment is not None:
            self._uncomment()
        if final:
            self.cut = n
        else:
            self.cut = int(self.terms[-1]) + 1 if self.terms.size else 0

    def _escaped(self) -> np.ndarray:
        """Positions of the bytes an escape character makes literal."""
        e = self.s.escape
        if e is None or bytes([e]) not in self.buf:
            return _NONE
        pos = np.flatnonzero(self.a == e)
        # In a run of escape characters, every other one escapes the next byte.
        run_start = np.ones(pos.size, bool)
        run_start[1:] = pos[1:] != pos[:-1] + 1
        starts = np.maximum.accumulate(np.where(run_start, pos, 0))
        escaping = (pos - starts) % 2 == 0
        escaped = pos[escaping] + 1
        return escaped[escaped < self.n]

    def _outside(self, positions: np.ndarray) -> np.ndarray:
        if not self.q.size:
            return positions
        return positions[(np.searchsorted(self.q, positions) & 1) == 0]

    def _terminators(self) -> np.ndarray:
        lf, lone = self._outside(self.lf), self._outside(self.lone)
        return np.union1d(lf, lone) if lone.size else lf

    def _uncomment(self) -> None:
        """Quotes in comment lines are not quotes: drop them, then find records again."""
        c = self.s.comment
        while self.q.size:
            starts = np.concatenate(([0], self.terms + 1))
            starts = starts[starts < self.n]
            comments = starts[self.a[starts] == c]
            if not comments.size:
                return
            ends = self._line_ends(comments)
            lo, hi = np.searchsorted(self.q, comments), np.searchsorted(self.q, ends)
            odd = np.flatnonzero((hi - lo) % 2 == 1)
            # Up to the first line with an odd number of quotes, every comment line above
            # is known for sure; that one changes the parity of everything after it.
            upto = int(odd[0]) + 1 if odd.size else comments.size
            drop = [np.arange(lo[i], hi[i]) for i in range(upto) if hi[i] > lo[i]]
            if not drop:
                return
            self.q = np.delete(self.q, np.concatenate(drop))
            self.terms = self._terminators()

    def _line_ends(self, starts: np.ndarray) -> np.ndarray:
        """Where the physical line of each start ends (its first line break, or the end)."""
        i = np.searchsorted(self.breaks, starts)
        out = np.full(starts.size, self.n, np.int64)
        has = i < self.breaks.size
        out[has] = self.breaks[i[has]]
        return out

    # -- the records up to the cut ------------------------------------------------------

    def records(self) -> Records:
        s, a, cut = self.s, self.a, self.cut
        terms = self.terms[self.terms < cut]
        starts = np.concatenate(([0], terms + 1))
        ends = np.concatenate((terms, [cut]))
        if starts[-1] >= cut:  # the run ends with a line break: no record after it
            starts, ends = starts[:-1], ends[:-1]
        nexts = np.concatenate((terms + 1, [cut]))[: starts.size]  # where the next record starts
        # The content of a record ends before its line break (CR of a CRLF included).
        crlf = (ends > starts) & (a[np.minimum(ends, self.n - 1)] == LF) & (ends < cut)
        crlf &= a[np.maximum(ends - 1, 0)] == CR
        if self.esc.size:
            crlf &= ~np.isin(ends - 1, self.esc)
        ends = ends - crlf
        nonblank = ends > starts
        comment = np.zeros(starts.size, bool)
        if s.comment is not None:
            comment[nonblank] = a[starts[nonblank]] == s.comment
        keep = nonblank & ~comment
        self.rec_starts, self.rec_ends = starts, ends
        errors = self._quote_errors()
        too_long = np.flatnonzero(ends - starts > s.fmt.max_record_bytes)
        if too_long.size:
            i = int(too_long[0])
            raise self.too_long(int(starts[i]), int(ends[i] - starts[i]))
        records = Records(
            data=memoryview(self.buf)[:cut],
            feed=b"",  # set below
            first_line=self.first_line,
            starts=starts[keep],
            ends=ends[keep],
            breaks=self.breaks[self.breaks < cut],
            run=self,
        )
        bad = np.zeros(starts.size, bool)
        reasons: dict[int, str] = {}
        first = -1
        if s.expected is None and keep.any():
            first = int(np.flatnonzero(keep)[0])
            s.expected = int(records.field_counts()[0])
            if errors and errors[0][0] < nexts[first]:
                raise self.rejection(*errors[0])  # the first record itself is malformed
        if s.expected == 1:
            # With one column, a blank line is a record: its one value is empty (NULL).
            later = np.arange(starts.size) > first if first >= 0 else s.expected is not None
            keep |= ~nonblank & later
            records.starts, records.ends = starts[keep], ends[keep]
        if errors and not s.quarantine:
            # A record above the first bad quote may already have the wrong field count.
            before = records.starts < self._start_of(errors[0][0])
            counts = records.field_counts()[before]
            wrong = np.flatnonzero(counts != s.expected)
            if wrong.size:
                raise s.count_rejection(records, int(wrong[0]), records.field_counts())
            raise self.rejection(*errors[0])
        if s.quarantine:
            for pos, kind in errors:
                i = int(np.searchsorted(starts, pos, side="right")) - 1
                if keep[i] and i not in reasons:
                    bad[i] = True
                    reasons[i] = self.reason(pos, kind, int(starts[i]))
            counts = np.zeros(starts.size, np.int64)
            counts[keep] = records.field_counts()
            for i in np.flatnonzero(keep & ~bad & (counts != s.expected)):
                i = int(i)
                bad[i] = True
                reasons[i] = self.count_reason(int(starts[i]), int(ends[i]), int(counts[i]))
        drop = comment | bad
        if first >= 0:
            excised = int(np.sum((nexts - starts)[:first][drop[:first]]))
            records.header_next = int(nexts[first]) - excised
        if drop.any():
            records.starts, records.ends = starts[keep & ~bad], ends[keep & ~bad]
            records.feed = self._excise(starts, nexts, drop)
            lines = records.line_of(starts[bad])
            for i, line in zip(np.flatnonzero(bad), lines, strict=True):
                text = self.buf[starts[i] : ends[i]]
                try:
                    decoded = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InvalidUtf8 from e
                records.bad.append(BadRecord(int(line), decoded, reasons[int(i)]))
        else:
            records.feed = records.data
        return records

    def _excise(self, starts: np.ndarray, nexts: np.ndarray, drop: np.ndarray) -> bytes:
        parts, at = [], 0
        for i in np.flatnonzero(drop):
            parts.append(self.buf[at : starts[i]])
            at = int(nexts[i])
        parts.append(self.buf[at : self.cut])
        return b"".join(parts)

    def delimiters_outside(self) -> np.ndarray:
        """Positions of the delimiters that separate fields (not quoted, not escaped)."""
        d = np.flatnonzero(self.a[: self.cut] == self.s.delim)
        if self.esc.size:
            d = np.setdiff1d(d, self.esc, assume_unique=True)
        return self._outside(d)

    def _quote_errors(self) -> list[tuple[int, str]]:
        """(position, kind) of every quote that breaks the grammar, in file order."""
        q = self.q[self.q < self.cut]
        return _quote_errors(self.a, q, self.n, self.s.delim, self.esc)

    # -- messages ---------------------------------------------------------------------------

    def _start_of(self, pos: int) -> int:
        i = int(np.searchsorted(self.rec_starts, pos, side="right")) - 1
        return int(self.rec_starts[max(i, 0)])

    def _line(self, pos: int) -> int:
        return self.first_line + int(np.searchsorted(self.breaks, pos))

    def rejection(self, pos: int, kind: str) -> RejectedFile:
        """The file's rejection for the first quote that breaks the grammar."""
        start = self._start_of(pos)
        line = self._line(pos)
        reason = self.reason(pos, kind, start)
        hint = comment_hint(self.s.fmt, self.buf[start : start + 1])
        hint += self.quarantine_hint() if kind != "unterminated" else ""
        return RejectedFile(
            f"line {line}: {reason}{hint}", line=line, value=_snippet(self.buf, start, pos)
        )

    def reason(self, pos: int, kind: str, start: int) -> str:
        """What is wrong with the quote at `pos`, and which setting or edit fixes it."""
        fmt, buf = self.s.fmt, self.buf
        q = fmt.quote
        literal = f"if {q} is an ordinary character in this file, set " + fmt.setting(
            "quote", _NO_QUOTE
        )
        where = f"near {_snippet(buf, start, pos)!r}"
        if kind == "unterminated":
            return f"a quoted value opened here ({where}) is never closed; close it, or {literal}"
        if kind == "inside":
            field_start = max(buf.rfind(bytes([self.s.delim]), start, pos) + 1, start)
            if buf[field_start:pos].strip(b" \t") == b"":
                return (
                    f"a space before the opening quote ({where}): RFC 4180 allows none, so "
                    f"the quote would be part of the value; remove the space"
                )
            return (
                f"a {q} inside an unquoted value ({where}); quote the whole value and double "
                f"its {q} ({q}a{q}{q}b{q}), or {literal}"
            )
        after = buf[pos + 1 : pos + 2]
        if fmt.escape is None and pos > start and buf[pos - 1 : pos] == b"\\":
            return (
                f"text after a closing quote ({where}); the file seems to escape quotes with "
                f"a backslash: set {fmt.setting('escape', _BACKSLASH)}"
            )
        if after in (b" ", b"\t"):
            return (
                f"a space after the closing quote ({where}): a quoted value must end at the "
                f"delimiter or the line end; remove the space"
            )
        return (
            f"text after a closing quote ({where}): a quoted value must end at the delimiter "
            f"or the line end; double the {q} inside it, or {literal}"
        )

    def count_reason(self, start: int, end: int, count: int) -> str:
        """Why a record with the wrong number of fields is bad."""
        expected = self.s.expected
        text = f"expected {_fields(expected or 0)}, got {count}"
        if count == (expected or 0) + 1 and self.buf[end - 1 : end] == bytes([self.s.delim]):
            text += " (the line ends with a delimiter: an extra empty field)"
        return text

    def quarantine_hint(self) -> str:
        """The advice to keep the good rows of a file with bad ones."""
        fmt = self.s.fmt
        return (
            f"; or set {fmt.setting('on_bad_rows', _QUARANTINE)} to register the good rows "
            f"and keep the bad ones in dataset {fmt.dataset}__rejected_rows"
        )

    def too_long(self, start: int, length: int) -> RejectedFile:
        """A record longer than the memory budget allows."""
        fmt = self.s.fmt
        line = self._line(start)
        limit = fmt.max_record_bytes / 2**20
        # Twice what the record has shown so far: it may be longer still.
        need = max(2 * 16 * -(-length // 2**20), 2 * fmt.memory_bytes // 2**20)
        return RejectedFile(
            f"line {line}: a record longer than {limit:g} MiB (1/16 of "
            f"{fmt.setting('converter_memory')}): if it is real, set "
            f"{fmt.setting('converter_memory', f'{_Q}{need}MiB{_Q}')}; if a quote opened on "
            f"this line is never closed, close it or set {fmt.setting('quote', _NO_QUOTE)}",
            line=line,
        )


def comment_hint(fmt: CsvFormat, first: bytes) -> str:
    """Advice for a bad record that starts like a comment line, when comments are not set."""
    if fmt.comment is not None or first not in (b"#", b";", b"%", b"/") or not first:
        return ""
    char = first.decode()
    return (
        f"; or if lines starting with {char} are comments, set {fmt.setting('comment', repr(char))}"
    )


def _snippet(buf: bytes, start: int, pos: int) -> str:
    """A few characters of the record around `pos`, for a message."""
    lo = max(start, pos - 24)
    end = buf.find(b"\n", pos)
    hi = min(pos + 16, end if end >= 0 else len(buf))
    return buf[lo:hi].decode("utf-8", "replace").replace("\r", "")


def _quote_errors(
    a: np.ndarray, q: np.ndarray, n: int, delim: int, esc: np.ndarray
) -> list[tuple[int, str]]:
    """(position, kind) of every quote in `q` that breaks the grammar, in file order.

    `q` holds the quote positions of a run that starts outside quotes; pairs open and
    close. An opening quote must start a value; a closing one must end it.
    """
    if not q.size:
        return []
    found: list[tuple[int, str]] = []
    if q.size % 2:
        # Only possible at the end of the file: a run is always cut outside quotes.
        found.append((int(q[-1]), "unterminated"))
        q = q[:-1]
    opens, closes = q[0::2], q[1::2]
    ends_value = _ENDS_VALUE[delim]
    prev = np.maximum(opens - 1, 0)
    ok = (opens == 0) | ends_value[a[prev]]
    if esc.size:
        ok &= (opens == 0) | ~np.isin(prev, esc)
    ok[1:] |= closes[:-1] == opens[1:] - 1  # a doubled quote inside a quoted value
    found += [(int(p), "inside") for p in opens[~ok]]
    nxt = np.minimum(closes + 1, a.size - 1)
    ok = ends_value[a[nxt]] | (closes + 1 == n)
    ok[:-1] |= opens[1:] == closes[:-1] + 1
    found += [(int(p), "after") for p in closes[~ok]]
    found.sort()
    return found


def _ends_value_table(delim: int) -> np.ndarray:
    table = np.zeros(256, bool)
    table[[delim, LF, CR]] = True
    return table


# Per delimiter byte: which bytes may stand right before an opening quote or right after a
# closing one (the delimiter and the line breaks).
_ENDS_VALUE = [_ends_value_table(d) for d in range(256)]


def _fields(count: int) -> str:
    return "1 field" if count == 1 else f"{count} fields"
