"""The bucket inbox: objects under `s3://bucket/prefix/`, listed by listing.py, staged by
download, archived by copy-then-delete.

Exactly once, with what S3 offers (the README's "Bucket inbox" section says it to users):

- Identity is content. Staging downloads the object while hashing it; the sha256 of those
  bytes is the source's identity in events (a multipart ETag is not a content hash). The
  object's (size, ETag) as the download saw it tells this upload from a later one.
- Archive is copy, then delete -- each only while the key still holds the staged upload.
  The copy carries `x-amz-copy-source-if-match` (S3 and MinIO refuse it once the key holds
  another upload) and is then checked: its ETag must be the staged ETag or the MD5 of the
  staged bytes, else it is removed and the newer upload is left for its own turn.
- The delete is the step S3 cannot make exact everywhere. The key is read back (HEAD) just
  before, and the DELETE carries `If-Match: <etag>`: Amazon S3 honours it (412 when the key
  holds a newer upload); MinIO and nanio ignore it. There, an upload that lands under the
  same key in the one round trip between that HEAD and the DELETE is deleted unread. The
  start-up probe finds out which kind of server this is and says so in the log; with
  versioning on the bucket, such an upload stays recoverable as a noncurrent version.
- A crash between copy and delete leaves the source listed again: it is staged, found to be
  a duplicate (`ingest.duplicate`), and its earlier copy under `.done/` is reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath

from minio.commonconfig import CopySource
from minio.error import S3Error

from lakehoused import names
from lakehoused.config import S3Location
from lakehoused.errors import InboxUnavailable, SourceGone
from lakehoused.inbox.base import OnReady, Pending, SourceFile, StagedSource
from lakehoused.inbox.listing import PrefixWatcher, Seen
from lakehoused.s3 import FAILURES, MISSING, Bucket

log = logging.getLogger("lakehoused")

DONE = ".done"
"""Where archived sources go, under the prefix."""
REJECTED = ".rejected"
"""Where rejected sources go, beside their `.error.json`."""
PROBES = ".lakehoused"
"""Where the start-up probe writes (and removes) its one small object."""
_CHUNK = 1 << 20
_REMEMBERED = 10_000  # names of deleted sources kept to notice a key rewritten in place

Identity = tuple[int, str, str]
"""(size, etag, md5 of the staged bytes): one upload under one key."""


class BucketInbox:
    """A bucket prefix: `prefix/x.csv` feeds dataset x, `prefix/sales/*.csv` dataset sales."""

    def __init__(
        self,
        location: S3Location,
        *,
        rescan_s: float = 30,
        notifications: bool = True,
        deletes: bool = True,
    ) -> None:
        self.bucket = Bucket(location, setting="inbox.url")
        self.bucket.check()
        self.url = location.url
        self._rescan_s = rescan_s
        self._notifications = notifications
        self._watcher: PrefixWatcher | None = None
        self._deleted: OrderedDict[str, None] = OrderedDict()  # names deleted lately
        self._warned: set[str] = set()
        # With after_ingest = "keep" nothing is ever removed, and nothing need be probed.
        self.conditional_deletes: bool | None = (
            self._probe_conditional_delete() if deletes else None
        )
        """Whether the server honours If-Match on DELETE (None when not probed)."""

    @property
    def problem(self) -> str | None:
        """Why listing fails now, while it does (the daemon is degraded meanwhile)."""
        return self._watcher.problem if self._watcher else None

    @property
    def error(self) -> BaseException | None:
        """Why the listing thread stopped, if it did (a bug: the daemon is broken)."""
        return self._watcher.error if self._watcher else None

    def start(self, on_ready: OnReady) -> None:
        """List the prefix, then keep listing in the background."""

        def ready(name: PurePosixPath, since: float, seen: Seen) -> None:
            on_ready(SourceFile(name, since, seen))

        self._watcher = PrefixWatcher(
            self.bucket, rescan_s=self._rescan_s, on_ready=ready, notifications=self._notifications
        )
        try:
            self._watcher.start()
        except FAILURES as e:
            raise self.bucket.unavailable(e, f"list {self.url}", InboxUnavailable) from e

    def stop(self) -> None:
        """Stop listing."""
        if self._watcher is not None:
            self._watcher.stop()

    def pending(self) -> list[Pending]:
        """Objects listed but not handed over (a listed object is complete: only unusable
        keys wait here)."""
        return self._watcher.pending() if self._watcher else []

    def forget(self, source: SourceFile) -> None:
        """The same upload listed later is a new drop."""
        if self._watcher is not None:
            self._watcher.forget(source.name, source.seen or None)  # type: ignore[arg-type]

    def uri(self, name: PurePosixPath) -> str:
        """The s3:// URI of a source."""
        return f"s3://{self.bucket.name}/{self.bucket.key(name.as_posix())}"

    # -- staging -------------------------------------------------------------------------

    def stage(self, source: SourceFile, into: Path) -> StagedSource:
        """Download the object into `into`, hashing it (sha256, and MD5 to check copies)."""
        key = self.bucket.key(source.name.as_posix())
        into.parent.mkdir(parents=True, exist_ok=True)
        try:
            response = self.bucket.client.get_object(self.bucket.name, key)
        except S3Error as e:
            if e.code in MISSING:
                raise SourceGone(f"{self.uri(source.name)} is gone") from None
            raise self._unavailable(e, f"download {key}") from e
        except FAILURES as e:
            raise self._unavailable(e, f"download {key}") from e
        sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        try:
            with open(into, "xb") as dst:
                # The bytes as stored: a `Content-Encoding: gzip` upload of x.csv.gz must stay
                # gzip, as its name says, not be inflated on the way.
                for chunk in response.stream(_CHUNK, decode_content=False):
                    sha256.update(chunk)
                    md5.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
        except FAILURES as e:
            into.unlink(missing_ok=True)
            raise self._unavailable(e, f"download {key}") from e
        finally:
            response.close()
            response.release_conn()
        headers = response.headers
        expected = int(headers.get("Content-Length", size))
        if size != expected:
            into.unlink(missing_ok=True)
            raise InboxUnavailable(f"download {key}: got {size} of {expected} bytes")
        etag = (headers.get("ETag") or "").strip('"')
        return StagedSource(
            source=source,
            path=into,
            uri=self.uri(source.name),
            sha256=sha256.hexdigest(),
            bytes=size,
            mtime=_rfc3339(headers.get("Last-Modified")),
            identity=(size, etag, md5.hexdigest()),
        )

    # -- after the decision --------------------------------------------------------------

    def archive(self, staged: StagedSource) -> bool:
        """Copy the source under `.done/`, then delete it, if it is still the staged upload."""
        target = self._free(DONE, staged)
        return target is not None and self._move(staged, target)

    def delete(self, staged: StagedSource) -> bool:
        """Delete the source, if it is still the staged upload."""
        return self._delete_if_unchanged(staged)

    def quarantine(self, staged: StagedSource, error: dict) -> bool:
        """Copy the source under `.rejected/` beside `<name>.error.json`, then delete it."""
        target = self._free(REJECTED, staged)
        if target is None or not self._copy(staged, target):
            return False
        body = (json.dumps(error, indent=2, sort_keys=True) + "\n").encode()
        try:
            self.bucket.client.put_object(
                self.bucket.name,
                target + ".error.json",
                io.BytesIO(body),
                len(body),
                content_type="application/json",
            )
        except FAILURES as e:
            raise self._unavailable(e, f"write {target}.error.json") from e
        self._delete_if_unchanged(staged)
        return True

    def _move(self, staged: StagedSource, target: str) -> bool:
        if not self._copy(staged, target):
            return False
        # Archived either way: the copy holds the staged upload. A newer upload that took
        # the key meanwhile stays where it is, for its own turn.
        self._delete_if_unchanged(staged)
        return True

    def _copy(self, staged: StagedSource, target: str) -> bool:
        """Copy the staged upload to `target`; False if the key holds another upload now."""
        _, etag, md5 = staged.identity
        source = self.bucket.key(staged.source.name.as_posix())
        existing = self._stat(target)
        if existing is not None:
            return True  # _free found an earlier copy of these very bytes (a retry)
        if not self._still(staged):
            return False
        try:
            result = self.bucket.client.copy_object(
                self.bucket.name,
                target,
                CopySource(self.bucket.name, source, match_etag=etag or None),
            )
        except S3Error as e:
            if e.code in (*MISSING, "PreconditionFailed"):
                return False
            raise self._unavailable(e, f"copy {source} to {target}") from e
        except FAILURES as e:
            raise self._unavailable(e, f"copy {source} to {target}") from e
        copied = (result.etag or "").strip('"')
        if copied in (etag, md5) or self._still(staged):
            return True
        # The server ignored the condition and copied a newer upload: undo, leave it be.
        self._remove(target)
        return False

    def _delete_if_unchanged(self, staged: StagedSource) -> bool:
        """Delete the source if the key still holds the staged upload; True if deleted."""
        if not self._still(staged):
            return False
        key = self.bucket.key(staged.source.name.as_posix())
        etag = staged.identity[1]
        try:
            # Exact where the server honours If-Match (Amazon S3); elsewhere the check above,
            # one round trip earlier, is all there is (see the module's docstring).
            self.bucket.client._execute(
                "DELETE", self.bucket.name, key, headers={"If-Match": f'"{etag}"'}
            )
        except S3Error as e:
            if e.code in (*MISSING, "PreconditionFailed"):
                return False
            raise self._unavailable(e, f"delete {key}") from e
        except FAILURES as e:
            raise self._unavailable(e, f"delete {key}") from e
        self._note_rewrite(staged.source.name.as_posix())
        return True

    def _note_rewrite(self, name: str) -> None:
        """Say once per key when a key is rewritten in place on a server that cannot make
        the delete conditional: that is when an upload can meet the delete."""
        if self.conditional_deletes is not False or name in self._warned:
            return
        if name not in self._deleted:
            self._deleted[name] = None
            if len(self._deleted) > _REMEMBERED:  # unique keys: remember the latest only
                self._deleted.popitem(last=False)
            return
        self._warned.add(name)
        log.warning(
            "%s: %s is uploaded again under the same key after each ingest; this server "
            "ignores If-Match on DELETE, so an upload that lands just as the previous one is "
            "archived would be deleted unread: give each upload a key of its own, or set "
            'inbox.after_ingest = "keep"',
            self.url,
            name,
            extra={"file": name},
        )

    def _still(self, staged: StagedSource) -> bool:
        """Whether the source's key holds the staged upload now (same size and ETag)."""
        info = self._stat(self.bucket.key(staged.source.name.as_posix()))
        return info is not None and info == staged.identity[:2]

    def _stat(self, key: str) -> tuple[int, str] | None:
        try:
            info = self.bucket.client.stat_object(self.bucket.name, key)
        except S3Error as e:
            if e.code in MISSING:
                return None
            raise self._unavailable(e, f"stat {key}") from e
        except FAILURES as e:
            raise self._unavailable(e, f"stat {key}") from e
        return info.size or 0, (info.etag or "").strip('"')

    def _free(self, folder: str, staged: StagedSource) -> str | None:
        """`prefix/<folder>/<name>`, or `<stem>.<n><suffix>` beside it when that is taken by
        other bytes. A copy of these very bytes (an archive a crash interrupted) is reused."""
        size, etag, md5 = staged.identity
        name = PurePosixPath(staged.source.name)
        suffix = names.accepted_suffix(name.name) or name.suffix
        stem = name.name[: len(name.name) - len(suffix)] if suffix else name.name
        base = self.bucket.key(f"{folder}/{name.parent.as_posix()}/").replace("/./", "/")
        for n in range(1000):
            candidate = base + (name.name if n == 0 else f"{stem}.{n}{suffix}")
            info = self._stat(candidate)
            if info is None or (info[0] == size and info[1] in (etag, md5)):
                return candidate
        return base + f"{stem}.{uuid.uuid4().hex}{suffix}"

    def _remove(self, key: str) -> None:
        try:
            self.bucket.client.remove_object(self.bucket.name, key)
        except FAILURES as e:
            raise self._unavailable(e, f"delete {key}") from e

    def _unavailable(self, e: BaseException, doing: str) -> InboxUnavailable:
        error = self.bucket.unavailable(e, f"{doing} in {self.url}", InboxUnavailable)
        assert isinstance(error, InboxUnavailable)
        return error

    def _probe_conditional_delete(self) -> bool | None:
        """Does the server honour If-Match on DELETE? One small object, written and removed."""
        key = self.bucket.key(f"{PROBES}/probe-{uuid.uuid4().hex}")
        client = self.bucket.client
        try:
            client.put_object(self.bucket.name, key, io.BytesIO(b"probe"), 5)
            try:
                client._execute(
                    "DELETE", self.bucket.name, key, headers={"If-Match": '"0000-not-the-etag"'}
                )
                honoured = client.stat_object(self.bucket.name, key) is not None
            except S3Error as e:
                if e.code == "PreconditionFailed":
                    honoured = True
                elif e.code in MISSING:
                    honoured = False  # the DELETE ignored its condition
                else:
                    raise
            client.remove_object(self.bucket.name, key)
        except FAILURES as e:
            raise self.bucket.misconfigured(e, "write and delete a probe object") from None
        if not honoured:
            log.warning(
                "%s: the server ignores If-Match on DELETE, so an upload that lands under a "
                "key in the moment between checking and deleting the file archived there "
                "could be deleted unread; turn on versioning for the bucket to keep such an "
                "upload recoverable",
                self.url,
            )
        return honoured


def _rfc3339(http_date: str | None) -> str:
    """An HTTP Last-Modified date as RFC 3339 UTC with microseconds."""
    try:
        moment = parsedate_to_datetime(http_date) if http_date else None
    except (TypeError, ValueError):
        moment = None
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = ["DONE", "PROBES", "REJECTED", "BucketInbox"]
