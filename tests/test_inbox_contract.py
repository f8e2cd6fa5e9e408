"""The Inbox contract: every backend passes the same tests. A backend joins by adding a
harness to HARNESSES: it makes the inbox and drops, replaces and reads files the way a user
of that kind of inbox would."""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest
from minio.error import S3Error

from lakehoused.errors import SourceGone
from lakehoused.inbox import BucketInbox, Inbox, LocalInbox, SourceFile
from tests.s3server import list_keys


class LocalHarness:
    """A local inbox directory, written to as `cp` and `mv` would."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "inbox"
        self.root.mkdir()
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.inbox: Inbox = LocalInbox(self.root, settle_ms=50, rescan_s=0)

    def drop(self, name: str, data: bytes) -> None:
        """A complete file appears under `name` at once (written elsewhere, renamed in)."""
        temp = self.outside / f"{time.monotonic_ns()}"
        temp.write_bytes(data)
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temp, target)

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None

    def listing(self, folder: str) -> list[str]:
        """Names under `.done` or `.rejected`, relative to that folder."""
        base = self.root / folder
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def close(self) -> None:
        self.inbox.stop()


class BucketHarness:
    """A bucket prefix on a real S3-protocol server (nanio), uploaded to with the minio
    client as any S3 tool would: a single PUT, or a multipart upload for a large file."""

    def __init__(self, nanio, prefix: str = "drop/") -> None:
        self.client = nanio.client()
        self.bucket = nanio.new_bucket()
        self.prefix = prefix
        self.inbox: Inbox = BucketInbox(nanio.location(self.bucket, prefix), rescan_s=0.05)

    def drop(self, name: str, data: bytes) -> None:
        """Upload `data` under the prefix (in 5 MiB parts when it is larger than that)."""
        self.client.put_object(
            self.bucket, self.prefix + name, io.BytesIO(data), len(data), part_size=5 << 20
        )

    def read(self, name: str) -> bytes | None:
        try:
            response = self.client.get_object(self.bucket, self.prefix + name)
        except S3Error as e:
            if e.code == "NoSuchKey":
                return None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def listing(self, folder: str) -> list[str]:
        base = f"{self.prefix}{folder}/"
        return [k[len(base) :] for k in list_keys(self.client, self.bucket, base)]

    def close(self) -> None:
        self.inbox.stop()


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalHarness]:
    harness = LocalHarness(tmp_path)
    yield harness
    harness.close()


def _bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BucketHarness]:
    harness = BucketHarness(request.getfixturevalue("nanio"))
    yield harness
    harness.close()


HARNESSES: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator]] = {
    "local": _local,
    "s3": _bucket,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request, tmp_path):
    yield from HARNESSES[request.param](request, tmp_path)


class Handed:
    """What the inbox hands over, collected from its thread."""

    def __init__(self) -> None:
        self.items: queue.Queue[SourceFile] = queue.Queue()

    def __call__(self, source: SourceFile) -> None:
        self.items.put(source)

    def next(self, timeout: float = 10.0) -> SourceFile:
        return self.items.get(timeout=timeout)

    def none_within(self, seconds: float) -> bool:
        try:
            self.items.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


def staged(harness, handed: Handed, tmp_path: Path, name: str, data: bytes):
    harness.drop(name, data)
    source = handed.next()
    assert source.name == PurePosixPath(name)
    return harness.inbox.stage(source, tmp_path / "ws" / f"{time.monotonic_ns()}" / "src")


def test_files_there_at_start_and_dropped_later_are_handed_over_once(harness):
    harness.drop("early.csv", b"a\n1\n")
    handed = Handed()
    harness.inbox.start(handed)
    assert handed.next().name == PurePosixPath("early.csv")
    harness.drop("sales/late.csv", b"a\n2\n")
    late = handed.next()
    assert late.name == PurePosixPath("sales/late.csv") and late.since <= time.time()
    assert handed.none_within(0.5)  # once each
    assert harness.inbox.error is None


def test_hidden_and_temporary_names_are_never_handed_over(harness):
    handed = Handed()
    harness.inbox.start(handed)
    for name in (".hidden.csv", "x.csv.tmp", "y.csv.part", ".done/z.csv", "w.csv~"):
        harness.drop(name, b"a\n1\n")
    harness.drop("real.csv", b"a\n1\n")
    assert handed.next().name == PurePosixPath("real.csv")
    assert handed.none_within(0.5)


def test_stage_makes_a_private_copy_with_its_hash(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    data = b"id,name\n1,a\n" * 1000
    copy = staged(harness, handed, tmp_path, "w.csv", data)
    assert copy.path.read_bytes() == data
    assert (copy.sha256, copy.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    facts = copy.facts()
    assert facts["name"] == "w.csv" and facts["uri"].endswith("w.csv") and facts["mtime"]
    # The copy stays what was staged whatever happens to the source afterwards.
    harness.drop("w.csv", b"id,name\n2,b\n")
    assert copy.path.read_bytes() == data


def test_a_source_gone_before_staging_is_source_gone(harness, tmp_path):
    with pytest.raises(SourceGone):
        harness.inbox.stage(SourceFile(PurePosixPath("nothing.csv"), time.time()), tmp_path / "x")


def test_archive_moves_only_the_staged_file(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    first = staged(harness, handed, tmp_path, "w.csv", b"n\n1\n")
    assert harness.inbox.archive(first) is True
    assert harness.read("w.csv") is None
    assert harness.listing(".done") == ["w.csv"]
    # The same name again: archived beside the first, not over it.
    second = staged(harness, handed, tmp_path, "w.csv", b"n\n2\n")
    assert harness.inbox.archive(second) is True
    assert len(harness.listing(".done")) == 2


def test_a_file_replaced_after_staging_is_left_for_its_own_turn(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    old = staged(harness, handed, tmp_path, "w.csv", b"n\n1\n")
    harness.drop("w.csv", b"n\n2\n")
    for act in (
        harness.inbox.archive,
        harness.inbox.delete,
        lambda s: harness.inbox.quarantine(s, {"reason": "x"}),
    ):
        assert act(old) is False
        assert harness.read("w.csv") == b"n\n2\n"
    assert harness.listing(".done") == [] and harness.listing(".rejected") == []
    assert handed.next().name == PurePosixPath("w.csv")  # the new one, handed over anew


def test_quarantine_writes_the_error_beside_the_file(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    bad = staged(harness, handed, tmp_path, "sales/bad.csv", b"a,b\n1,2,3\n")
    error = {"file": "sales/bad.csv", "reason": "line 2: expected 2 fields, got 3", "seq": 4}
    assert harness.inbox.quarantine(bad, error) is True
    assert harness.read("sales/bad.csv") is None
    assert harness.listing(".rejected") == ["sales/bad.csv", "sales/bad.csv.error.json"]
    doc = harness.read(".rejected/sales/bad.csv.error.json")
    assert json.loads(doc) == error


def test_delete_removes_only_the_staged_file(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    copy = staged(harness, handed, tmp_path, "w.csv", b"n\n1\n")
    assert harness.inbox.delete(copy) is True
    assert harness.read("w.csv") is None
    assert harness.listing(".done") == []


def test_forget_then_the_same_name_is_a_new_drop(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    copy = staged(harness, handed, tmp_path, "w.csv", b"n\n1\n")
    harness.inbox.archive(copy)
    harness.inbox.forget(copy.source)
    harness.drop("w.csv", b"n\n1\n")  # the very same bytes, dropped again
    assert handed.next().name == PurePosixPath("w.csv")


def test_pending_lists_files_not_yet_complete(harness):
    handed = Handed()
    harness.inbox.start(handed)
    assert harness.inbox.pending() == []
    assert harness.inbox.url


def test_a_large_source_stages_whole_and_archives(harness, tmp_path):
    # Large enough that a bucket upload is multipart: its ETag is no content hash, so the
    # identity must come from the staged bytes.
    handed = Handed()
    harness.inbox.start(handed)
    data = b"id,text\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(500_000))
    copy = staged(harness, handed, tmp_path, "big.csv", data)
    assert (copy.sha256, copy.bytes) == (hashlib.sha256(data).hexdigest(), len(data))
    assert copy.path.read_bytes() == data
    assert harness.inbox.archive(copy) is True
    assert harness.read("big.csv") is None
    assert harness.listing(".done") == ["big.csv"]
    assert harness.read(".done/big.csv") == data


def test_a_source_removed_after_staging_is_not_archived(harness, tmp_path):
    handed = Handed()
    harness.inbox.start(handed)
    copy = staged(harness, handed, tmp_path, "w.csv", b"n\n1\n")
    harness.drop("w.csv", b"n\n22\n")  # replaced, then the replacement archived elsewhere
    newer = handed.next()
    harness.inbox.archive(harness.inbox.stage(newer, tmp_path / "ws2" / "w.csv"))
    assert harness.inbox.archive(copy) is False
    assert harness.listing(".done") == ["w.csv"]
    assert harness.read(".done/w.csv") == b"n\n22\n"
