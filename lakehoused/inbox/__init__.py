"""Inboxes: where source files come from (DESIGN §1, §2), behind one small protocol.

`open_inbox` picks the backend from the config: a local directory (`LocalInbox`, watched
with inotify plus a polling rescan) or a bucket prefix (`BucketInbox`, listed every
`rescan_s`, with MinIO's notifications as hints).
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
from lakehoused.inbox.bucket import BucketInbox
from lakehoused.inbox.local import LocalInbox


def open_inbox(config: InboxConfig) -> Inbox:
    """The inbox the config names; a bucket is checked at once (ConfigError naming the
    setting when it cannot be listed)."""
    if config.s3 is not None:
        return BucketInbox(
            config.s3, rescan_s=config.rescan_s, deletes=config.after_ingest != "keep"
        )
    assert config.path is not None
    return LocalInbox(config.path, settle_ms=config.settle_ms, rescan_s=config.rescan_s)


__all__ = [
    "SETTLING",
    "WRITING",
    "BucketInbox",
    "Inbox",
    "LocalInbox",
    "OnReady",
    "Pending",
    "SourceFile",
    "StagedSource",
    "open_inbox",
]
