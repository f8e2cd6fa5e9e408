"""Every failure has a home (DESIGN §7): each kind injected into a real daemon.

The file's fault ends as `ingest.rejected` and a quarantined file (test_daemon.py has those);
a transient failure makes the file wait and retry while /status says why and /health says
degraded; a broken daemon answers 503 on /health and stops feeding the systemd watchdog.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lakehoused.config import load_config
from lakehoused.daemon import build_app
from tests.daemon_process import dataset_rows, rows, staged


def registered(daemon, name: str) -> list[dict]:
    return [
        e for e in daemon.events() if e["type"] == "dataset.registered" and e["dataset"] == name
    ]


def test_an_unreachable_store_is_transient_and_nothing_is_lost(make_daemon, tmp_path):
    daemon = make_daemon()
    store = daemon.config.parent / "var" / "objects"
    shutil.rmtree(store)
    store.write_text("the store's disk is gone")  # a file where the directory should be
    os.rename(staged(tmp_path, "w.csv", rows(4)), daemon.inbox / "w.csv")

    def retrying() -> dict | None:
        status = daemon.get("/status")
        waiting = [p for p in status["pending"] if p["state"] == "retrying"]
        return status if waiting else None

    status = daemon.wait_for(retrying, what="the file waiting for a retry")
    (ticket,) = [p for p in status["pending"] if p["state"] == "retrying"]
    assert ticket["file"] == "w.csv" and "objects" in ticket["error"]
    assert status["files_pending"] == 1 and status["counts"]["retrying"] == 1
    code, health = daemon.get_any("/health")
    assert (code, health["status"]) == (200, "degraded")
    assert health["problems"][0]["part"] == "store" and health["problems"][0]["since"]
    assert (daemon.inbox / "w.csv").exists()  # not rejected: it is not the file's fault

    store.unlink()  # the disk is back
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 4, timeout=30, what="the retry")
    assert len(registered(daemon, "w")) == 1
    assert daemon.wait_for(lambda: daemon.get("/health")["status"] == "ok", what="ok again")
    assert daemon.get("/status")["files_pending"] == 0


async def test_a_locked_log_is_transient(aiohttp_client, make_config, tmp_path):
    config = load_config(make_config())
    client = await aiohttp_client(build_app(config, busy_timeout_s=0.3))
    # Another writer holds the log (a long `lakehoused replay`, say).
    blocker = sqlite3.connect(config.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        shutil.copy(staged(tmp_path, "w.csv", rows(2)), config.inbox.path / "w.csv")
        for _ in range(200):
            status = await (await client.get("/status")).json()
            if status["counts"]["retrying"]:
                break
            await asyncio.sleep(0.05)
        (ticket,) = [p for p in status["pending"] if p["state"] == "retrying"]
        assert "another writer held the log" in ticket["error"]
        health = await (await client.get("/health")).json()
        assert health["status"] == "degraded"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for _ in range(200):
        answer = await client.post("/sql", json={"sql": "SELECT count(*) FROM w"})
        if answer.status == 200:
            break
        await asyncio.sleep(0.05)
    assert (await answer.json())["rows"] == [[2]]
    events = (await (await client.get("/events")).json())["events"]
    assert [e["type"] for e in events] == ["dataset.registered"]


class Watchdog:
    """A stand-in for systemd's notify socket, recording what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def last(self, message: str) -> float | None:
        times = [at for at, text in self.messages if text == message]
        return times[-1] if times else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def watchdog(tmp_path):
    dog = Watchdog(tmp_path / "notify.sock")
    yield dog
    dog.close()


def systemd_env(watchdog: Watchdog) -> dict[str, str]:
    return {"NOTIFY_SOCKET": str(watchdog.path), "WATCHDOG_USEC": "200000"}


def test_a_dead_inbox_watcher_breaks_the_daemon_and_stops_the_watchdog(make_daemon, watchdog):
    daemon = make_daemon(env=systemd_env(watchdog))
    daemon.wait_for(lambda: watchdog.last("WATCHDOG=1"), what="keep-alives")
    assert watchdog.last("READY=1") is not None
    shutil.rmtree(daemon.inbox)  # the inbox's disk went away under the watcher

    def broken() -> dict | None:
        code, body = daemon.get_any("/health")
        return body if code == 503 else None

    body = daemon.wait_for(broken, what="/health 503")
    assert body["status"] == "broken"
    assert body["problems"][0]["part"] == "inbox" and "gone" in body["problems"][0]["reason"]
    # The watchdog starves, so systemd restarts the daemon.
    stopped_feeding = time.monotonic()
    time.sleep(1.0)
    assert (watchdog.last("WATCHDOG=1") or 0) < stopped_feeding
    assert any("the daemon is broken" in line for line in daemon.output)


def test_a_log_that_cannot_be_written_breaks_the_daemon_and_keeps_the_file(
    make_daemon, tmp_path, watchdog
):
    env = {"LAKEHOUSED_FAULT": "log_fails:dataset.registered", **systemd_env(watchdog)}
    daemon = make_daemon(env=env)
    os.rename(staged(tmp_path, "w.csv", rows(3)), daemon.inbox / "w.csv")

    def broken() -> dict | None:
        code, body = daemon.get_any("/health")
        return body if code == 503 else None

    body = daemon.wait_for(broken, what="/health 503")
    (problem,) = body["problems"]
    assert problem["part"] == "log" and "disk I/O error" in problem["reason"]
    assert (daemon.inbox / "w.csv").exists()  # kept for the restart, never quarantined
    assert daemon.events() == []
    assert not (daemon.inbox / ".rejected" / "w.csv").exists()
    at = time.monotonic()
    time.sleep(1.0)
    assert (watchdog.last("WATCHDOG=1") or 0) < at

    # systemd restarts it; with the disk healthy again, the file is registered once.
    assert daemon.stop() == 0
    again = make_daemon()
    again.wait_for(lambda: dataset_rows(again, "w") == 3, what="ingested after the restart")
    assert len(registered(again, "w")) == 1


def test_an_archive_that_fails_after_the_event_is_retried_alone(make_daemon, tmp_path):
    daemon = make_daemon()
    done = daemon.inbox / ".done"
    shutil.rmtree(done)
    done.write_text("the archive's disk is gone")  # a file where the folder should be
    os.rename(staged(tmp_path, "w.csv", rows(3)), daemon.inbox / "w.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 3, what="registered")

    def retrying() -> dict | None:
        status = daemon.get("/status")
        return status if status["counts"]["retrying"] else None

    status = daemon.wait_for(retrying, what="the archive waiting for a retry")
    assert "is registered, but" in status["pending"][0]["error"]
    time.sleep(1.5)  # a retry or two: each must do the archive only
    assert [e["type"] for e in daemon.events()] == ["dataset.registered"]
    done.unlink()  # the disk is back
    daemon.wait_for((done / "w.csv").exists, timeout=30, what="archived")
    assert [e["type"] for e in daemon.events()] == ["dataset.registered"]
    assert daemon.get("/status")["files_pending"] == 0
