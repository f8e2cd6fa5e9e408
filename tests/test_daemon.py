"""The real `lakehoused run` as a subprocess, driven the way a user drives it (DESIGN §2, §5, §7)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Daemon:
    """A running `lakehoused run` and a tiny HTTP client for it."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.inbox = config.parent / "inbox"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lakehoused", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            cwd=config.parent,
        )
        self.output: list[str] = []
        self.url = self._wait_for_url()
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 30
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith("lakehoused: serving on "):
                return line.split()[-1]
        raise AssertionError("daemon did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def get(self, path: str, **params: object) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=10) as response:
            return json.loads(response.read())

    def sql(self, query: str) -> list[list]:
        request = urllib.request.Request(
            self.url + "/sql",
            data=json.dumps({"sql": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["rows"]

    def wait_for(
        self, check: Callable[[], object], timeout: float = 20.0, what: str = "condition"
    ) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = check()
            except (urllib.error.URLError, ConnectionError):
                result = None
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n" + "".join(self.output[-30:]))

    def children(self) -> set[int]:
        """The daemon's child processes (converters, multiprocessing's resource tracker)."""
        found: set[int] = set()
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            found |= {int(pid) for pid in (task / "children").read_text().split()}
        return found

    def events(self) -> list[dict]:
        return self.get("/events", limit=1000)["events"]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def make_daemon(make_config):
    """Start the real daemon on a fresh inbox; `make_daemon(env={...}, **config sections)`."""
    started: list[Daemon] = []
    state: dict[str, Path] = {}

    def make(env: dict[str, str] | None = None, **sections: str) -> Daemon:
        if "config" not in state:
            state["config"] = make_config(**sections)
        daemon = Daemon(state["config"], env or {})
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


def staged(tmp_path: Path, name: str, text: str) -> Path:
    """A finished file outside the inbox, ready to be moved or copied in."""
    path = tmp_path / "outside" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows(n: int, start: int = 0) -> str:
    return "id,amount,note\n" + "".join(f"{i},{i * 1.5},row {i}\n" for i in range(start, start + n))


def dataset_rows(daemon: Daemon, name: str) -> int | None:
    try:
        return daemon.sql(f"SELECT count(*) FROM {name}")[0][0]
    except urllib.error.HTTPError:
        return None


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
    "point", ["crash_after_convert", "crash_after_put", "crash_after_append", "crash_after_refresh"]
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


def test_sigterm_stops_cleanly(make_daemon):
    daemon = make_daemon()
    assert daemon.stop() == 0
