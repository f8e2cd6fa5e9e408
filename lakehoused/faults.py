"""Fault injection for the crash tests: `LAKEHOUSED_FAULT=<point>[:<file name part>]`.

A `crash_*` point kills the whole daemon with SIGKILL (as a power cut would), from
whichever process reaches it; `converter_dies` kills only the converter process;
`converter_fails` raises an unexpected error in it; `slow_archive` widens the window in
which a new file can replace one being archived. Unset,
every point is a no-op costing one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "LAKEHOUSED_FAULT"
POINTS = (
    "crash_after_convert",  # the temp Parquet is written and fsynced
    "crash_after_put",  # the object is under its content address
    "crash_after_append",  # the event is in the log
    "crash_after_refresh",  # the views show it; the source is not archived yet
    "converter_dies",  # the converter process dies mid-conversion
    "converter_fails",  # the conversion raises an error that is not the file's fault
    "slow_archive",  # a second passes between the views' refresh and the archive
)

# The daemon's pid, set in its converter processes, so a crash point there kills the daemon.
daemon_pid: int | None = None


def point(name: str, subject: str = "") -> None:
    """Die here if the environment asks for this point (and this file)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    wanted, _, part = spec.partition(":")
    if wanted != name or part not in subject:
        return
    if name == "converter_fails":
        raise RuntimeError(f"injected fault at {name}")
    if name == "slow_archive":
        time.sleep(1.0)
        return
    if name.startswith("crash_") and daemon_pid and daemon_pid != os.getpid():
        os.kill(daemon_pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
