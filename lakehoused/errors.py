"""The one tree of errors lakehoused raises; each says what failed and what to change."""

from __future__ import annotations

from typing import Any


class LakehousedError(Exception):
    """Base of every error lakehoused raises on purpose."""

    status = 500
    code = "internal"


class ConfigError(LakehousedError):
    """A setting in config.toml (or the environment) is missing, unknown or invalid."""

    code = "config"


class RejectedFile(LakehousedError):
    """A source file cannot be ingested; the message says why in words a person can act on."""

    status = 422
    code = "rejected"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.reason = message
        # Where it went wrong (line, column, byte_offset, value): kept apart for the event.
        self.details = {k: v for k, v in details.items() if v is not None}


class LogError(LakehousedError):
    """The event log refused an operation or is not in the state it should be."""

    code = "log"


class VersionConflict(LogError):
    """An event was built against a catalog state that has moved on; rebuild it and retry."""

    code = "conflict"


class DuplicateEvent(LogError):
    """An event with this id is already in the log (a retried registration)."""

    code = "duplicate"


class StoreError(LakehousedError):
    """The object store failed or holds something it should not."""

    code = "store"


class Transient(LakehousedError):
    """A failure that is nobody's fault and passes: the file waits and is tried again."""

    status = 503
    code = "unavailable"


class LogBusy(Transient, LogError):
    """Another writer held the log longer than the busy timeout."""

    code = "log_busy"


class StoreUnavailable(Transient, StoreError):
    """The object store cannot be reached or written right now."""

    code = "store_unavailable"


class InboxUnavailable(Transient):
    """The inbox (a directory or a bucket) cannot be read right now."""

    code = "inbox_unavailable"


class SourceChanged(Transient):
    """The source file changed while it was being ingested; it is taken again as it is now."""

    code = "source_changed"


class SourceGone(LakehousedError):
    """The source file went away before it was staged: there is nothing left to ingest."""

    code = "source_gone"


class QueryError(LakehousedError):
    """The SQL cannot run: a syntax error, an unknown column, a failed cast."""

    status = 400
    code = "bad_sql"


class BadRequest(LakehousedError):
    """An HTTP request the API cannot take as sent: the message names the field to fix."""

    status = 400
    code = "bad_request"


class ForbiddenQuery(QueryError):
    """The statement is not a single read-only SELECT."""

    status = 403
    code = "forbidden"


class QueryTimeout(QueryError):
    """The query ran longer than server.query_timeout_s and was interrupted."""

    status = 408
    code = "timeout"


class QueryCancelled(QueryError):
    """The client went away, so its query was interrupted; nobody is left to answer."""

    status = 499  # nginx's "client closed request": only ever seen in a log
    code = "cancelled"


class UnknownDataset(LakehousedError):
    """No dataset of that name is in the catalog."""

    status = 404
    code = "not_found"
