"""A file's text: decompression, byte order marks, encodings and editor line numbers.

The converter parses UTF-8. A UTF-8 file (the default, with or without a BOM) is passed
through untouched and validated run by run by the reader (reader.py); a file with a UTF-16 or UTF-32 BOM,
or whose dataset names another encoding, is decoded here, strictly, and re-encoded as UTF-8
on the way. Line numbers are counted as a text editor counts them: LF, CRLF and a lone CR
each end one line, however they are mixed.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from lakehoused.errors import RejectedFile
from lakehoused.ingest.dialect import CsvFormat

CHUNK_BYTES = 1 << 20
# Longest first: a UTF-32-LE BOM starts with the UTF-16-LE one.
BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_DETECT_BYTES = 256 << 10  # what the encoding detector looks at
_EVIDENCE_BYTES = 16  # non-ASCII bytes it needs before its guess is worth repeating


@contextmanager
def open_bytes(path: Path, compression: str | None) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
    """The file's (decompressed) bytes, and a function giving how far into the file we are."""
    with open(path, "rb") as raw:
        if compression == "gzip":
            with gzip.GzipFile(fileobj=raw) as gz:
                yield _CheckedGzip(gz), raw.tell  # type: ignore[misc]
        else:
            yield raw, raw.tell


class _CheckedGzip:
    """A gzip stream whose damage is the file's fault: a rejection, not a crash."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self.gz = gz

    def read(self, size: int = -1) -> bytes:
        try:
            return self.gz.read(size)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise RejectedFile(
                f"not a valid gzip file ({e}); compress it again, or drop it uncompressed "
                "without the .gz suffix"
            ) from e


def codec_name(encoding: str) -> str:
    """Python's canonical name of a codec: 'UTF8' and 'utf_8' are both 'utf-8'."""
    return codecs.lookup(encoding).name


def count_lines(data: bytes) -> int:
    """Line breaks in `data` as an editor counts them: LF, CRLF and lone CR, one each."""
    breaks = data.count(b"\n")
    if b"\r" in data:
        breaks += data.count(b"\r") - data.count(b"\r\n")
    return breaks


class Utf8Text:
    """The file's content as UTF-8 byte chunks, whatever its encoding; BOM removed."""

    def __init__(self, data: BinaryIO, fmt: CsvFormat, chunk_bytes: int | None = None) -> None:
        self.data, self.fmt = data, fmt
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.head = data.read(self.chunk_bytes)
        self.bom: str | None = None
        self.encoding = codec_name(fmt.encoding)
        skip = 0
        if self.encoding == "utf-8":
            # A byte order mark is unambiguous: honoured whatever the setting says about UTF-8.
            for mark, name in BOMS:
                if self.head.startswith(mark):
                    self.bom, self.encoding, skip = name, name, len(mark)
                    break
        self.transcoded = self.encoding != "utf-8"
        self.head = self.head[skip:]
        self.offset = skip  # raw bytes before the chunk being decoded
        self.lines_before = 0  # line breaks decoded so far (transcoded files only)

    @property
    def name(self) -> str:
        """The encoding as recorded in the dialect."""
        return self.encoding

    def chunks(self) -> Iterator[bytes]:
        """Every chunk of the content, as UTF-8 bytes."""
        if not self.transcoded:
            chunk, self.head = self.head, b""
            while chunk:
                yield chunk
                chunk = self.data.read(self.chunk_bytes)
            return
        decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        chunk, first, self.head = self.head, True, b""
        while True:
            final = not chunk
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as e:
                raise self._decode_error(e, pending) from e
            if first and text.startswith("\ufeff"):
                text = text[1:]  # a BOM the codec left (utf-16-le named without it)
            first = False
            self.offset += len(chunk)
            if text:
                self.lines_before += text.count("\n") + text.count("\r") - text.count("\r\n")
                yield text.encode("utf-8")
            if final:
                return
            chunk = self.data.read(self.chunk_bytes)

    def _decode_error(self, e: UnicodeDecodeError, pending: int) -> RejectedFile:
        offset = self.offset - pending + e.start
        valid = e.object[: e.start].decode(self.encoding, "replace")
        line = 1 + self.lines_before + count_lines(valid.encode("utf-8"))
        bad = e.object[e.start : e.end]
        return RejectedFile(
            f"not valid {self.encoding} at byte offset {offset} (line {line}): byte(s) "
            f"{bad.hex(' ')}; the file is not in the encoding named by "
            f"{self.fmt.setting('encoding')} ({self.fmt.encoding}): " + _how_to_find_out(self.fmt),
            byte_offset=offset,
            line=line,
        )


def find_invalid_utf8(data: BinaryIO, skip: int = 0) -> tuple[int, int, bytes] | None:
    """(byte offset, line, offending bytes) of the first invalid UTF-8 sequence, or None.

    `skip` bytes at the start (a BOM) are counted in the offset but not decoded.
    """
    data.read(skip)
    offset, line, carry = skip, 1, b""  # offset: bytes before `carry`
    while True:
        chunk = data.read(1 << 20)
        buf = carry + chunk
        try:
            buf.decode("utf-8")
            valid = len(buf)
        except UnicodeDecodeError as e:
            # A sequence cut by the chunk boundary is only bad if the file ends there.
            if e.reason == "unexpected end of data" and chunk:
                valid = e.start
            else:
                return offset + e.start, line + count_lines(buf[: e.start]), buf[e.start : e.end]
        # A CR at the cut may be the first half of a CRLF: counted with the next chunk.
        if valid and buf[valid - 1 : valid] == b"\r" and chunk:
            valid -= 1
        line += count_lines(buf[:valid])
        offset += valid
        carry = buf[valid:]
        if not chunk:
            return None


def invalid_utf8_error(path: Path, fmt: CsvFormat) -> RejectedFile | None:
    """Where a UTF-8 file is not UTF-8, with advice on its likely encoding; None if it is."""
    with open_bytes(path, fmt.compression) as (data, _):
        head = data.read(3)
        skip = 3 if head == b"\xef\xbb\xbf" else 0
    with open_bytes(path, fmt.compression) as (data, _):
        found = find_invalid_utf8(data, skip)
    if found is None:
        return None
    offset, line, bad = found
    with open_bytes(path, fmt.compression) as (data, _):
        data.read(max(0, offset - _DETECT_BYTES // 2))
        sample = data.read(_DETECT_BYTES)
    guess = guess_encoding(sample)
    if guess:
        advice = (
            f"it looks like {guess}: set {fmt.setting('encoding', repr(guess))}, or save "
            "the file as UTF-8"
        )
    else:
        advice = "save the file as UTF-8, or " + _how_to_find_out(fmt)
    return RejectedFile(
        f"not valid UTF-8 at byte offset {offset} (line {line}): byte(s) {bad.hex(' ')}; " + advice,
        byte_offset=offset,
        line=line,
    )


def _how_to_find_out(fmt: CsvFormat) -> str:
    return (
        "find out which encoding the program that wrote it used (its export settings, or "
        "`file -i FILE`, or a text editor's 'reopen with encoding'), then set "
        f"{fmt.setting('encoding')} to it (any Python codec name, e.g. cp1252, "
        "windows-1251, shift_jis)"
    )


def guess_encoding(sample: bytes) -> str | None:
    """The sample's encoding when a detector is confident of it; None otherwise.

    charset-normalizer ranks decodings by how much they look like text; it is trusted
    only when its best guess reads as coherent, unmangled text.
    """
    from charset_normalizer import from_bytes  # only on a rejected file: not on the fast path

    if sum(1 for byte in sample if byte >= 0x80) < _EVIDENCE_BYTES:
        return None  # a few odd bytes say nothing about a character set
    best = from_bytes(sample).best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    if best.percent_chaos > 10 or (best.percent_coherence < 20 and len(sample) > 64):
        return None
    return codecs.lookup(best.encoding).name
