"""Inboxes: where source files come from (DESIGN §1, §2), behind one small protocol.

`open_inbox` picks the backend from the config: a local directory (`LocalInbox`, watched
with inotify plus a polling rescan).
"""

from __future__ import annotations

from lakehoused.config import InboxConfig
from lakehoused.inbox.base import (
    SETTLING,
    WRITING,
    Inbox,
    OnReady,
    Pending,
    SourceFile,
    StagedSource,
)
from lakehoused.inbox.local import LocalInbox


def open_inbox(config: InboxConfig) -> Inbox:
    """The inbox the config names."""
    return LocalInbox(config.path, settle_ms=config.settle_ms, rescan_s=config.rescan_s)


__all__ = [
    "SETTLING",
    "WRITING",
    "Inbox",
    "LocalInbox",
    "OnReady",
    "Pending",
    "SourceFile",
    "StagedSource",
    "open_inbox",
]
