"""The daemon's health, as /health, /status and the systemd watchdog tell it (DESIGN §7).

Three states. *ok*. *degraded*: something transient is failing (a locked log, a store or
endpoint out of reach) and files wait to be retried; the daemon still serves. *broken*: a
part the daemon cannot work without has failed (the inbox watcher died, the log cannot be
written, the views cannot be built): /health answers 503 with the reason, and the watchdog
stops, so systemd restarts the daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

log = logging.getLogger("lakehoused")

OK = "ok"
DEGRADED = "degraded"
BROKEN = "broken"


@dataclass(frozen=True)
class Problem:
    """One current problem: what is failing, since when, and the last error seen."""

    part: str  # "inbox", "log", "store", "views", "converters"
    reason: str
    since: float

    def to_json(self) -> dict:
        """The /health and /status form."""
        return {"part": self.part, "reason": self.reason, "since": rfc3339(self.since)}


def rfc3339(ts: float) -> str:
    """A time as RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Health:
    """What is broken and what is degraded now; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._broken: dict[str, Problem] = {}
        self._degraded: dict[str, Problem] = {}

    def broken(self, part: str, reason: str) -> None:
        """The daemon cannot work: `part` failed for good (systemd should restart it)."""
        with self._lock:
            if part in self._broken:
                return
            self._broken[part] = Problem(part, reason, time.time())
        log.critical("the daemon is broken: %s: %s; /health answers 503", part, reason)

    def degraded(self, part: str, reason: str) -> None:
        """Something passing is failing; files wait. Keeps the first `since`."""
        with self._lock:
            known = self._degraded.get(part)
            self._degraded[part] = Problem(part, reason, known.since if known else time.time())
        if known is None:
            log.error("degraded: %s: %s; affected files are retried", part, reason)

    def recovered(self, part: str) -> None:
        """A degraded part works again."""
        with self._lock:
            known = self._degraded.pop(part, None)
        if known is not None:
            log.warning("recovered: %s works again (degraded since %s)", part, rfc3339(known.since))

    @property
    def state(self) -> str:
        """OK, DEGRADED or BROKEN."""
        with self._lock:
            return BROKEN if self._broken else DEGRADED if self._degraded else OK

    def problems(self) -> list[Problem]:
        """Every current problem, broken ones first."""
        with self._lock:
            return [*self._broken.values(), *self._degraded.values()]
