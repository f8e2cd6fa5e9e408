"""Log lines a person reads in journald, or JSON for machines (`--log-format json`).

Each line may carry the dataset, the file and the seq it is about (passed as `extra`).
Under systemd, stderr goes to the journal: lines then start with the `<N>` syslog priority
prefix journald understands, so `journalctl -p warning` shows rejections and problems, and
carry no timestamp of their own (the journal adds one).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TextIO

FORMATS = ("text", "json")
CONTEXT = ("dataset", "file", "seq", "event")
"""The `extra` fields a line may carry, in the order they are shown."""

# syslog priorities, as sd-daemon(3) defines the prefixes.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def _context(record: logging.LogRecord) -> dict:
    return {k: getattr(record, k) for k in CONTEXT if getattr(record, k, None) is not None}


class TextFormatter(logging.Formatter):
    """`2026-11-29 12:00:00,123 INFO message [dataset=x file=y seq=7]`."""

    def __init__(self, *, journald: bool = False) -> None:
        super().__init__("%(message)s" if journald else "%(asctime)s %(levelname)s %(message)s")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        """The line, with its context and, for journald, its priority prefix."""
        line = super().format(record)
        context = _context(record)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        if self.journald:
            priority = _PRIORITY.get(record.levelno, 6)
            line = "\n".join(f"<{priority}>{part}" for part in line.splitlines())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: at, level, message, and the context fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON."""
        body = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False, default=str)


def under_journald(stream: TextIO) -> bool:
    """Whether `stream` is connected to the journal (systemd sets JOURNAL_STREAM to dev:ino)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send lakehoused's log lines to `stream` (stderr) in `fmt`."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(journald=under_journald(stream)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
