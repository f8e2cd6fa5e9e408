"""A burst of small files into a real daemon: files/s, and how fast reads stay meanwhile.

    python bench/burst.py [--files 1000] [--datasets 100]

Starts `lakehoused run` on a fresh directory, moves the files into its inbox at once (half
top-level files, each its own dataset; half spread over append folders), and while they are
ingested keeps asking GET /events, /datasets and /status, one after another on one
connection. Prints each read's p50 and max latency during the burst (target: max < 100 ms)
and the files ingested per second. A benchmark: it prints figures, it never fails on them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READS = ("/events?after={after}&limit=100", "/datasets", "/status")


def write_files(outside: Path, count: int, folders: int) -> list[tuple[Path, str]]:
    """Small CSV files ready to be moved in: (file, its name under the inbox)."""
    files = []
    for i in range(count):
        path = outside / f"f{i}.csv"
        path.write_text(
            "id,amount,note\n" + "".join(f"{i * 10 + r},{r * 1.5},note {r}\n" for r in range(10))
        )
        name = f"d{i}.csv" if i % 2 == 0 else f"folder{i % folders}/part{i}.csv"
        files.append((path, name))
    return files


def start_daemon(base: Path) -> tuple[subprocess.Popen, str]:
    (base / "inbox").mkdir()
    config = base / "config.toml"
    config.write_text(
        '[inbox]\npath = "inbox"\n[store]\npath = "var/objects"\n[state]\npath = "var/state"\n'
        '[server]\nhost = "127.0.0.1"\nport = 0\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lakehoused", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("lakehoused: serving on "):
            return process, line.split()[-1]
    raise SystemExit("the daemon did not start")


class Reader(threading.Thread):
    """Reads the API in a loop on one keep-alive connection, timing each answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        self.latencies: dict[str, list[float]] = {path.split("?")[0]: [] for path in READS}
        self.after = 0
        self.stop = threading.Event()

    def get(self, path: str) -> tuple[float, dict]:
        started = time.perf_counter()
        self.connection.request("GET", path)
        body = json.loads(self.connection.getresponse().read())
        return (time.perf_counter() - started) * 1000, body

    def run(self) -> None:
        while not self.stop.is_set():
            for template in READS:
                elapsed, body = self.get(template.format(after=self.after))
                self.latencies[template.split("?")[0]].append(elapsed)
                if "next_after" in body:
                    self.after = body["next_after"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--datasets", type=int, default=100, help="append folders")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lakehoused-burst-") as tmp:
        base = Path(tmp)
        outside = base / "outside"
        outside.mkdir()
        files = write_files(outside, args.files, args.datasets)
        process, url = start_daemon(base)
        try:
            reader = Reader(url)
            _, status = reader.get("/status")
            load_before = os.getloadavg()[0]
            reader.start()
            started = time.perf_counter()
            for path, name in files:
                target = base / "inbox" / name
                target.parent.mkdir(exist_ok=True)
                os.rename(path, target)
            probe = Reader(url)
            peak_pending = 0
            while True:
                time.sleep(0.1)
                _, status = probe.get("/status")
                peak_pending = max(peak_pending, status["files_pending"])
                _, events = probe.get(f"/events?after={args.files - 1}&limit=1")
                if events["events"] and status["files_pending"] == 0:
                    break
            elapsed = time.perf_counter() - started
            reader.stop.set()
            reader.join()
            load_after = os.getloadavg()[0]
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(
        f"{time.strftime('%Y-%m-%d')}: {args.files} files of 10 rows "
        f"({args.files // 2} top-level datasets, {args.files - args.files // 2} parts in "
        f"{args.datasets} append folders), moved into the inbox at once"
    )
    print(f"all ended in {elapsed:.1f} s: {args.files / elapsed:.1f} files/s")
    print(f"peak files_pending seen in /status: {peak_pending}")
    print(f"{'read':<12}{'requests':>10}{'p50 ms':>10}{'max ms':>10}   (target: max < 100 ms)")
    for path, values in reader.latencies.items():
        p50, worst = statistics.median(values), max(values)
        verdict = "ok" if worst < 100 else "MISS"
        print(f"{path:<12}{len(values):>10}{p50:>10.1f}{worst:>10.1f}   {verdict}")
    print(f"load average (1 min) before/after: {load_before:.2f}/{load_after:.2f} on 2 cores")


if __name__ == "__main__":
    main()
