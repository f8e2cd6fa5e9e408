"""The real `lakehoused run` as a subprocess, and what tests need to drive it as a user would."""

from __future__ import annotations

import json
import os
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


class Daemon:
    """A running `lakehoused run` and a tiny HTTP client for it."""

    def __init__(self, config: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.inbox = config.parent / "inbox"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lakehoused", "run", "--config", str(config), *args],
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

    def get_any(self, path: str) -> tuple[int, dict]:
        """(status, JSON body) whatever the status."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

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
