"""The local inbox watcher on a real directory with the real watchdog observer."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from lakehoused.inbox.base import SETTLING, WRITING
from lakehoused.inbox.watcher import InboxWatcher
from lakehoused.names import APPEND, REPLACE, accepted_suffix, locate

SETTLE_MS = 100
QUIET_S = 3 * SETTLE_MS / 1000  # long enough that a wrong second handover would have happened


@dataclass
class Inbox:
    """A watcher under test, the inbox it watches, and what it handed over."""

    root: Path
    outside: Path
    watcher: InboxWatcher
    handed: list[tuple[PurePosixPath, int]] = field(default_factory=list)

    def paths(self) -> list[PurePosixPath]:
        return [relpath for relpath, _ in self.handed]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[PurePosixPath]:
        """Wait (bounded) until at least `count` files were handed over."""
        deadline = time.monotonic() + timeout
        while len(self.handed) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.handed) >= count, f"handed over {self.paths()}, expected {count}"
        return self.paths()


@pytest.fixture
def make_inbox(tmp_path: Path) -> Iterator[Callable[..., Inbox]]:
    """Build an inbox and its watcher (started unless start=False); stopped after the test."""
    watchers: list[InboxWatcher] = []

    def make(*, start: bool = True, **overrides: object) -> Inbox:
        root, outside = tmp_path / "inbox", tmp_path / "outside"
        root.mkdir(exist_ok=True)
        outside.mkdir(exist_ok=True)
        handed: list[tuple[PurePosixPath, int]] = []

        def on_ready(relpath: PurePosixPath, since: float, seen: tuple) -> None:
            # The size at handover: a half-written file would show a short one.
            handed.append((relpath, (root / relpath).stat().st_size))

        options: dict[str, object] = {"settle_ms": SETTLE_MS, "rescan_s": 0, "on_ready": on_ready}
        options.update(overrides)
        watcher = InboxWatcher(root, **options)  # type: ignore[arg-type]
        watchers.append(watcher)
        if start:
            watcher.start()
        return Inbox(root, outside, watcher, handed)

    yield make
    for watcher in watchers:
        watcher.stop()
        assert watcher.error is None


def write(path: Path, text: str = "id,name\n1,a\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_written_and_closed_is_handed_over_once(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    write(inbox.root / "workers.csv")
    assert inbox.wait_for(1) == [PurePosixPath("workers.csv")]
    assert locate(inbox.paths()[0]).mode == REPLACE
    time.sleep(QUIET_S)
    assert len(inbox.handed) == 1
    assert inbox.watcher.pending() == []


def test_a_file_renamed_in_from_outside_is_handed_over(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    os.rename(write(inbox.outside / "a.csv"), inbox.root / "a.csv")
    # The usual atomic-write patterns: a hidden or .part name inside, renamed into place.
    os.rename(write(inbox.root / ".b.csv"), inbox.root / "b.csv")
    os.rename(write(inbox.root / "c.csv.part"), inbox.root / "c.csv")
    assert sorted(inbox.wait_for(3)) == [PurePosixPath(f"{n}.csv") for n in "abc"]
    time.sleep(QUIET_S)
    assert len(inbox.handed) == 3


def test_a_fresh_file_renamed_in_does_not_wait_to_settle(make_inbox: Callable[..., Inbox]) -> None:
    # Complete by convention once renamed into place; written in place, it must settle.
    inbox = make_inbox(settle_ms=2000)
    fresh = write(inbox.outside / "moved.csv")  # its mtime is now: no head start
    started = time.monotonic()
    os.rename(fresh, inbox.root / "moved.csv")
    inbox.wait_for(1, timeout=1.5)
    assert time.monotonic() - started < 1.0
    write(inbox.root / "written.csv")
    time.sleep(1.0)
    assert inbox.paths() == [PurePosixPath("moved.csv")]  # still settling
    assert inbox.wait_for(2, timeout=3.0)[1] == PurePosixPath("written.csv")


def test_a_file_written_to_after_its_rename_settles_first(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(settle_ms=500)
    with open(inbox.outside / "grow.csv", "w") as fh:
        fh.write("id\n1\n")
        fh.flush()
        os.rename(inbox.outside / "grow.csv", inbox.root / "grow.csv")
        for i in range(5):  # the writer still holds it: not complete yet
            time.sleep(0.05)
            fh.write(f"{i}\n")
            fh.flush()
    inbox.wait_for(1)
    assert inbox.handed == [(PurePosixPath("grow.csv"), (inbox.root / "grow.csv").stat().st_size)]


def test_a_slow_writer_is_handed_over_after_it_closes(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    path = inbox.root / "slow.csv"
    closed = threading.Event()
    seen_writing: list[bool] = []

    def writer() -> None:
        with path.open("w") as f:
            f.write("id\n")
            for i in range(7):  # a chunk every 300 ms for ~2 s, three times settle_ms
                f.write(f"{i}\n")
                f.flush()
                time.sleep(0.3)
                seen_writing.append(inbox.watcher.pending()[0].state == WRITING)
                assert inbox.handed == [], "handed over while the writer held it open"
        closed.set()

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(timeout=5)
    assert closed.is_set() and all(seen_writing)
    assert inbox.wait_for(1) == [PurePosixPath("slow.csv")]
    assert inbox.handed[0][1] == path.stat().st_size
    time.sleep(QUIET_S)
    assert len(inbox.handed) == 1


def test_files_in_sub_folders_at_any_depth(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    write(inbox.root / "sales" / "2026-11-01.csv")
    write(inbox.root / "sales" / "2026" / "11" / "02.csv")
    (inbox.root / "empty").mkdir()  # a folder is never handed over
    expected = [PurePosixPath("sales/2026-11-01.csv"), PurePosixPath("sales/2026/11/02.csv")]
    assert set(inbox.wait_for(2)) == set(expected)
    assert {(locate(p).dataset, locate(p).mode) for p in expected} == {("sales", APPEND)}
    time.sleep(QUIET_S)
    assert len(inbox.handed) == 2


def test_a_folder_moved_in_hands_over_each_file(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    for name in ("a.csv", "b.csv", "c.csv"):
        write(inbox.outside / "batch" / name)
    os.rename(inbox.outside / "batch", inbox.root / "sales")
    assert sorted(inbox.wait_for(3)) == [PurePosixPath(f"sales/{n}.csv") for n in "abc"]
    time.sleep(QUIET_S)
    assert len(inbox.handed) == 3


def test_ignored_names_are_never_handed_over(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox()
    ignored = [".hidden.csv", "x.csv.tmp", "x.part", "x.csv~", ".done/a.csv", ".rejected/b.csv"]
    for name in ignored:
        write(inbox.root / name)
    write(inbox.root / "notes.txt")  # unsupported, but the daemon must reject it with a reason
    write(inbox.root / "ok.csv")
    assert sorted(inbox.wait_for(2)) == [PurePosixPath("notes.txt"), PurePosixPath("ok.csv")]
    assert accepted_suffix("notes.txt") is None
    time.sleep(QUIET_S)
    assert inbox.watcher.scan() == 0
    assert inbox.watcher.poll() == []
    assert len(inbox.handed) == 2


def test_a_file_present_before_start_is_found_by_the_startup_scan(
    make_inbox: Callable[..., Inbox], tmp_path: Path
) -> None:
    write(tmp_path / "inbox" / "early.csv")
    write(tmp_path / "inbox" / "sales" / "early.csv")
    inbox = make_inbox()
    assert sorted(inbox.wait_for(2)) == [
        PurePosixPath("early.csv"),
        PurePosixPath("sales/early.csv"),
    ]


def test_without_notifications_a_rescan_finds_a_new_file(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(use_notifications=False, rescan_s=0.1)
    write(inbox.root / "late.csv")
    assert inbox.wait_for(1) == [PurePosixPath("late.csv")]
    time.sleep(QUIET_S)  # several rescans later
    assert len(inbox.handed) == 1


def settle() -> None:
    time.sleep(SETTLE_MS / 1000 * 1.5)


def test_a_rescan_hands_over_again_only_what_changed_or_was_forgotten(
    make_inbox: Callable[..., Inbox],
) -> None:
    # Driven step by step: no observer, no background thread.
    inbox = make_inbox(start=False, use_notifications=False)
    watcher, relpath = inbox.watcher, PurePosixPath("a.csv")
    path = write(inbox.root / "a.csv")
    assert watcher.scan() == 1
    assert [(p.relpath, p.state) for p in watcher.pending()] == [(relpath, SETTLING)]
    assert watcher.poll() == []  # not settled yet
    settle()
    assert watcher.poll() == [relpath]
    assert watcher.pending() == []

    assert watcher.scan() == 0  # handed over and unchanged
    settle()
    assert watcher.poll() == []

    with path.open("a") as f:
        f.write("2,b\n")
    assert watcher.scan() == 1  # changed since the handover
    settle()
    assert watcher.poll() == [relpath]

    watcher.forget(relpath)
    assert watcher.scan() == 1  # forgotten: a file there now is a new drop
    settle()
    assert watcher.poll() == [relpath]
    assert [size for _, size in inbox.handed] == [12, 16, 16]


def test_a_file_deleted_while_settling_is_dropped(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(start=False, use_notifications=False)
    path = write(inbox.root / "gone.csv")
    assert inbox.watcher.scan() == 1
    path.unlink()
    settle()
    assert inbox.watcher.poll() == []
    assert inbox.watcher.pending() == []
    assert inbox.handed == []


def test_a_deleted_file_leaves_pending_with_notifications(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(settle_ms=2000)  # long, so the delete lands while it settles
    path = write(inbox.root / "gone.csv")
    deadline = time.monotonic() + 2
    states: list[str] = []
    while states != [SETTLING] and time.monotonic() < deadline:
        time.sleep(0.01)
        states = [p.state for p in inbox.watcher.pending()]
    assert states == [SETTLING]
    path.unlink()
    while inbox.watcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inbox.watcher.pending() == []
    assert inbox.handed == []


def test_the_daemon_reading_a_handed_file_does_not_hand_it_over_again(
    make_inbox: Callable[..., Inbox],
) -> None:
    inbox = make_inbox()
    path = write(inbox.root / "a.csv")
    inbox.wait_for(1)
    path.read_bytes()  # opened, closed_no_write: what hashing looks like
    time.sleep(QUIET_S)
    assert inbox.watcher.pending() == []
    assert len(inbox.handed) == 1
    # A reader of a file still settling does not hold it back either.
    other = write(inbox.root / "b.csv")
    other.read_bytes()
    assert inbox.wait_for(2)[1] == PurePosixPath("b.csv")


def test_a_file_rewritten_after_handover_is_handed_over_again(
    make_inbox: Callable[..., Inbox],
) -> None:
    inbox = make_inbox()
    path = write(inbox.root / "a.csv")
    inbox.wait_for(1)
    write(path, "id,name\n1,a\n2,b\n")
    assert inbox.wait_for(2) == [PurePosixPath("a.csv")] * 2
    assert inbox.handed[1][1] == path.stat().st_size
