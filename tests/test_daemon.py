"""The real `lakehoused run` as a subprocess, driven the way a user drives it (DESIGN §2, §5, §7)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.daemon_process import dataset_rows, rows, staged


def test_end_to_end_as_a_user(make_daemon, tmp_path):
    daemon = make_daemon()
    health = daemon.get("/health")
    assert health["status"] == "ok"

    shutil.copy(staged(tmp_path, "copied.csv", rows(100)), daemon.inbox / "copied.csv")  # cp
    os.rename(staged(tmp_path, "moved.csv", rows(50)), daemon.inbox / "moved.csv")  # mv

    # A slow writer: 2 s of chunks; never ingested half-written.
    def write_slowly() -> None:
        with open(daemon.inbox / "slow.csv", "w", encoding="utf-8") as fh:
            fh.write("id,amount,note\n")
            for part in range(8):
                fh.write(rows(10, part * 10).split("\n", 1)[1])
                fh.flush()
                time.sleep(0.25)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    (daemon.inbox / "sales").mkdir()
    os.rename(staged(tmp_path, "a.csv", rows(3)), daemon.inbox / "sales" / "2026-11-01.csv")
    os.rename(staged(tmp_path, "b.csv", rows(4, 3)), daemon.inbox / "sales" / "2026-11-02.csv")
    writer.join()

    daemon.wait_for(lambda: dataset_rows(daemon, "copied") == 100, what="copied")
    daemon.wait_for(lambda: dataset_rows(daemon, "moved") == 50, what="moved")
    daemon.wait_for(lambda: dataset_rows(daemon, "slow") == 80, what="slow")
    daemon.wait_for(lambda: dataset_rows(daemon, "sales") == 7, what="sales")
    assert daemon.sql("SELECT sum(amount) FROM sales") == [[sum(i * 1.5 for i in range(7))]]
    sales = daemon.get("/datasets/sales")
    assert (sales["mode"], sales["version"], len(sales["parts"])) == ("append", 2, 2)

    events = daemon.events()
    assert [e["type"] for e in events].count("dataset.registered") == 5
    assert not [e for e in events if e["type"] == "ingest.rejected"]
    slow = [e for e in events if e["dataset"] == "slow"]
    assert len(slow) == 1 and slow[0]["data"]["object"]["rows"] == 80
    done = sorted(
        p.relative_to(daemon.inbox / ".done").as_posix()
        for p in (daemon.inbox / ".done").rglob("*.csv")
    )
    assert done == [
        "copied.csv",
        "moved.csv",
        "sales/2026-11-01.csv",
        "sales/2026-11-02.csv",
        "slow.csv",
    ]
    assert daemon.stop() == 0


def test_a_cli_ingest_beside_the_daemon_reaches_its_views(make_daemon, tmp_path):
    daemon = make_daemon()
    source = staged(tmp_path, "beside.csv", rows(5))
    subprocess.run(
        [sys.executable, "-m", "lakehoused", "ingest", str(source), "--config", str(daemon.config)],
        check=True,
        capture_output=True,
    )
    finished = time.monotonic()
    daemon.wait_for(lambda: dataset_rows(daemon, "beside") == 5, timeout=5, what="views")
    assert time.monotonic() - finished < 1.0


def test_a_converter_that_dies_rejects_only_its_file(make_daemon, tmp_path):
    daemon = make_daemon(env={"LAKEHOUSED_FAULT": "converter_dies:poison"})
    os.rename(staged(tmp_path, "poison.csv", rows(10)), daemon.inbox / "poison.csv")
    os.rename(staged(tmp_path, "fine.csv", rows(10)), daemon.inbox / "fine.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "fine") == 10, what="fine")
    error = daemon.inbox / ".rejected" / "poison.csv.error.json"
    daemon.wait_for(error.exists, what="poison rejected")
    assert "converter process died" in json.loads(error.read_text())["reason"]
    assert daemon.get("/health")["status"] == "ok"
    # The next file after the death is converted by a fresh converter.
    os.rename(staged(tmp_path, "after.csv", rows(3)), daemon.inbox / "after.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "after") == 3, what="after")


def test_a_file_replaced_while_the_last_one_is_archived_is_not_lost(make_daemon, tmp_path):
    daemon = make_daemon(env={"LAKEHOUSED_FAULT": "pause_archive:w.csv"})
    os.rename(staged(tmp_path, "w1.csv", rows(3)), daemon.inbox / "w.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 3, what="first version")
    # The first is registered but not archived yet: the second takes its name.
    os.rename(staged(tmp_path, "w2.csv", rows(5)), daemon.inbox / "w.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 5, what="second version")
    # The rename destroyed the first file; the second is archived only once it is ingested.
    archived = daemon.inbox / ".done" / "w.csv"
    daemon.wait_for(archived.exists, what="the second archived")
    assert archived.read_text() == rows(5)
    assert not (daemon.inbox / "w.csv").exists()
    registered = [e for e in daemon.events() if e["type"] == "dataset.registered"]
    assert [e["data"]["object"]["rows"] for e in registered] == [3, 5]


def test_an_unexpected_converter_error_quarantines_the_file(make_daemon, tmp_path):
    daemon = make_daemon(env={"LAKEHOUSED_FAULT": "converter_fails:odd"})
    os.rename(staged(tmp_path, "odd.csv", rows(10)), daemon.inbox / "odd.csv")
    error = daemon.inbox / ".rejected" / "odd.csv.error.json"
    daemon.wait_for(error.exists, what="odd rejected")
    assert "internal error while ingesting: RuntimeError" in json.loads(error.read_text())["reason"]
    (event,) = [e for e in daemon.events() if e["type"] == "ingest.rejected"]
    assert event["dataset"] == "odd"
    os.rename(staged(tmp_path, "fine.csv", rows(4)), daemon.inbox / "fine.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "fine") == 4, what="fine")


@pytest.mark.parametrize(
    "point",
    [
        "crash_after_stage",
        "crash_after_convert",
        "crash_after_put",
        "crash_after_append",
        "crash_after_refresh",
    ],
)
def test_sigkill_at_each_step_loses_and_duplicates_nothing(make_daemon, tmp_path, point):
    daemon = make_daemon(env={"LAKEHOUSED_FAULT": f"{point}:victim"})
    children = daemon.wait_for(daemon.children, what="converter processes")
    os.rename(staged(tmp_path, "victim.csv", rows(20)), daemon.inbox / "victim.csv")
    daemon.process.wait(timeout=30)
    assert daemon.process.returncode == -signal.SIGKILL
    # Nothing of the dead daemon lives on: its converters die with it.
    daemon.wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 10, "orphans"
    )
    assert (daemon.inbox / "victim.csv").exists()  # never archived before its event

    again = make_daemon()  # restart, no fault this time
    again.wait_for((again.inbox / ".done" / "victim.csv").exists, what="victim archived")
    assert dataset_rows(again, "victim") == 20
    events = again.events()
    registered = [e for e in events if e["type"] == "dataset.registered"]
    assert len(registered) == 1
    assert not [e for e in events if e["type"] == "ingest.rejected"]
    if point in ("crash_after_append", "crash_after_refresh"):
        assert [e["type"] for e in events] == ["dataset.registered", "ingest.duplicate"]
    assert again.stop() == 0
    verify = subprocess.run(
        [sys.executable, "-m", "lakehoused", "verify", "--config", str(again.config)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    objects = list((again.config.parent / "var" / "objects" / "datasets").rglob("*.parquet"))
    assert [p.name for p in objects] == [registered[0]["data"]["object"]["sha256"] + ".parquet"]
    assert list((again.config.parent / "var" / "state" / "staging").iterdir()) == []


@pytest.mark.parametrize("point", ["pause_stage", "pause_convert", "pause_archive"])
def test_a_file_replaced_at_each_step_is_registered_exactly_once_in_order(
    make_daemon, tmp_path, point
):
    marks = tmp_path / "marks"
    marks.mkdir()
    daemon = make_daemon(
        env={"LAKEHOUSED_FAULT": f"{point}:w.csv", "LAKEHOUSED_FAULT_MARKS": str(marks)}
    )
    first, second = rows(3), rows(5, start=3)
    os.rename(staged(tmp_path, "w1.csv", first), daemon.inbox / "w.csv")
    daemon.wait_for(lambda: list(marks.iterdir()), what=f"the daemon paused at {point}")
    os.rename(staged(tmp_path, "w2.csv", second), daemon.inbox / "w.csv")  # mid-step
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 5, what="the second version")
    daemon.wait_for(lambda: not (daemon.inbox / "w.csv").exists(), what="the second archived")

    registered = [e for e in daemon.events() if e["type"] == "dataset.registered"]
    assert [e["data"]["version"] for e in registered] == [1, 2]
    shas = [hashlib.sha256(text.encode()).hexdigest() for text in (first, second)]
    assert [e["data"]["source"]["sha256"] for e in registered] == shas
    # Each object holds exactly the rows of the file its event names: none lost, none twice.
    store = daemon.config.parent / "var" / "objects"
    for event, text in zip(registered, (first, second), strict=True):
        table = pq.read_table(store / event["data"]["object"]["key"])
        assert table.column("id").to_pylist() == [
            int(line.split(",")[0]) for line in text.splitlines()[1:]
        ]
    assert not [e for e in daemon.events() if e["type"] != "dataset.registered"]
    done = sorted(p.read_text() for p in (daemon.inbox / ".done").glob("w*.csv"))
    # The first file's name was taken before it could be archived, unless it was archived
    # before the replacement (the pause is after archiving is decided, never during it).
    assert second in done and all(text in (first, second) for text in done)


def test_sigterm_stops_cleanly(make_daemon):
    daemon = make_daemon()
    assert daemon.stop() == 0


def test_status_counts_every_file_seen_and_not_ended_during_a_burst(make_daemon, tmp_path):
    # Each conversion takes a second: the files pile up behind the two converters.
    daemon = make_daemon(env={"LAKEHOUSED_FAULT": "pause_convert"})
    files = 12
    for i in range(files):
        name = f"d{i}.csv" if i % 2 else f"sales/p{i}.csv"
        target = daemon.inbox / name
        target.parent.mkdir(exist_ok=True)
        os.rename(staged(tmp_path, f"f{i}.csv", rows(2, start=i * 2)), target)
    seen_queued = False
    seen_all = False
    while True:
        status = daemon.get("/status")
        counts = status["counts"]
        assert status["files_pending"] == sum(counts.values())
        ended = {e["data"]["source"]["name"] for e in daemon.events()}
        # Once the inbox has seen every file, each one is pending or ended, until all end
        # (an ended one may still be in flight, archiving).
        seen_all |= status["files_pending"] + len(ended) >= files
        if seen_all:
            assert files <= status["files_pending"] + len(ended) <= files + counts["in_flight"]
        seen_queued |= counts["queued"] > 0
        assert counts["in_flight"] <= 4 and counts["retrying"] == 0
        if len(ended) == files and status["files_pending"] == 0:
            break
        time.sleep(0.1)
    assert seen_queued
    assert dataset_rows(daemon, "sales") == 12
