"""Fault injection for the crash and failure tests: `LAKEHOUSED_FAULT=<point>[:<name part>],…`.

A `crash_*` point kills the whole daemon with SIGKILL (as a power cut would), from
whichever process reaches it; `converter_dies` kills only the converter process;
`converter_fails` raises an unexpected error in it; `pause_*` points sleep a second, which
widens the window in which a test replaces a file mid-ingest; `watcher_dies` and
`log_fails` break the daemon the way a dead thread or a failing disk would. Unset, every
point is a no-op costing one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

ENV = "LAKEHOUSED_FAULT"
MARK_ENV = "LAKEHOUSED_FAULT_MARKS"
"""A directory where each pause point, as it starts, leaves a file named after itself, so
a test acts exactly while the daemon is paused there."""
POINTS = (
    "crash_after_stage",  # the source is staged; nothing converted yet
    "crash_after_convert",  # the Parquet file is written and fsynced
    "crash_after_put",  # the object is under its content address
    "crash_after_append",  # the event is in the log
    "crash_after_refresh",  # the views show it; the source is not archived yet
    "converter_dies",  # the converter process dies mid-conversion
    "converter_fails",  # the conversion raises an error that is not the file's fault
    "pause_stage",  # a second passes in the middle of staging
    "pause_convert",  # a second passes in the middle of the conversion
    "pause_archive",  # a second passes between the views' refresh and the archive
    "watcher_dies",  # the inbox watcher's thread raises
    "log_fails",  # appending to the log fails as a broken disk would
)
PAUSE_S = 1.0

# The daemon's pid, set in its converter processes, so a crash point there kills the daemon.
daemon_pid: int | None = None


def _wanted(name: str, subject: str) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    for item in spec.split(","):
        wanted, _, part = item.partition(":")
        if wanted == name and part in subject:
            return True
    return False


def point(name: str, subject: str = "") -> None:
    """Act here if the environment asks for this point (and this file)."""
    if not _wanted(name, subject):
        return
    if name.startswith("pause_"):
        marks = os.environ.get(MARK_ENV)
        if marks:
            with open(os.path.join(marks, f"{name}.{time.monotonic_ns()}"), "w"):
                pass
        time.sleep(PAUSE_S)
    elif name == "converter_fails":
        raise RuntimeError(f"injected fault at {name}")
    elif name == "watcher_dies":
        raise RuntimeError("injected fault: the watcher thread died")
    elif name == "log_fails":
        raise sqlite3.OperationalError("disk I/O error (injected fault)")
    else:
        if name.startswith("crash_") and daemon_pid and daemon_pid != os.getpid():
            os.kill(daemon_pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
