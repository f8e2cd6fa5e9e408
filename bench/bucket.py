#!/usr/bin/env python3
"""Bucket benchmark: objects held in a bucket against a local store, upload -> queryable, and
the cost of listing a prefix that holds many archived objects.

    python bench/bucket.py [--rows 500000] [--requests 50] [--trials 20] [--archived 100000]
                           [--only serve,pyarrow,latency,listing]

Everything runs against nanio (bench/s3server.py), a real S3-protocol server, on 127.0.0.1.

1. serve: the workers CSV (bench/gen_workers.py, cached in bench/data/) is ingested by
   `lakehoused ingest` into two roots, one with a local store and one with its store in a
   bucket; both daemons serve it, and each query is asked of both, alternately, on
   kept-alive connections: p50 of each and the ratio bucket/local (target <= 1.1 once
   cached), with the default memory cache and with it off (every query reads Parquet).
   Also the bucket daemon's cold start (its cache emptied first, so it downloads).
2. pyarrow: the alternative to the cache, measured in-process: DuckDB over a pyarrow
   dataset on pyarrow's S3 filesystem, against DuckDB over the cached local file.
3. latency: a daemon watching a bucket prefix with `rescan_s = 1`; a 1,000-row CSV is
   uploaded under a new key of an append dataset (after a random wait, so uploads fall
   anywhere in the listing cycle) and timed until `SELECT max(id)` shows it: p50 over
   --trials uploads (target <= 1 s).
4. listing: one listing pass of lakehoused's inbox over a prefix with 10 live objects,
   then with --archived objects under `.done/` (written straight into nanio's data
   directory, with the metadata files nanio itself writes), against one recursive listing.

It prints figures and never asserts on timing; every figure comes with the load average.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.s3server import KEYS_ENV, Nanio  # noqa: E402
from bench.serve import QUERIES  # noqa: E402  (the serving benchmark's four queries)

WARMUP = 5
RESCAN_S = 1.0
LATENCY_ROWS = 1000
TARGET_RATIO = 1.1
TARGET_LATENCY_MS = 1000
SECTIONS = ("serve", "pyarrow", "latency", "listing")


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    return (
        statistics.quantiles(values, n=10, method="inclusive")[8] if len(values) > 1 else values[0]
    )


def workers_file(rows: int) -> Path:
    """The cached workers CSV of `rows` rows (the same file bench/serve.py uses)."""
    from bench.gen_workers import write_workers

    DATA.mkdir(exist_ok=True)
    path = DATA / f"workers_{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".csv.partial")
        log(f"generating {path.name} ...")
        write_workers(rows, partial)
        partial.rename(path)
    return path


# -- a daemon and its config ----------------------------------------------------------------


def write_config(
    root: Path,
    nanio: Nanio,
    *,
    inbox: str | None = None,
    store: str | None = None,
    memory_cache: str = "512MB",
) -> Path:
    """A config under `root`; `inbox`/`store` are s3:// URLs, or None for directories."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "inbox").mkdir(exist_ok=True)
    inbox_line = f'url = "{inbox}"\nrescan_s = {RESCAN_S}' if inbox else 'path = "inbox"'
    store_line = f'url = "{store}"' if store else 'path = "var/objects"'
    config = root / "config.toml"
    config.write_text(
        f"[inbox]\n{inbox_line}\n\n[store]\n{store_line}\n\n"
        '[state]\npath = "var/state"\n\n'
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmemory_cache = "{memory_cache}"\n\n'
        + nanio.toml(),
        encoding="utf-8",
    )
    return config


def lakehoused(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lakehoused", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **KEYS_ENV},
        check=True,
    )


class Daemon:
    """`lakehoused run` as a subprocess, asked SQL over one kept-alive connection."""

    def __init__(self, config: Path) -> None:
        started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lakehoused", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **KEYS_ENV},
        )
        self.output: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith("lakehoused: serving on "):
                host, port = line.split()[-1].removeprefix("http://").rsplit(":", 1)
                break
        else:
            raise RuntimeError("lakehoused did not start:\n" + "".join(self.output))
        self.start_s = time.monotonic() - started
        threading.Thread(target=self._drain, daemon=True).start()
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def sql(self, query: str) -> list[list]:
        self.conn.request(
            "POST", "/sql", json.dumps({"sql": query}), {"Content-Type": "application/json"}
        )
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")
        return json.loads(body)["rows"]

    def timed(self, query: str) -> float:
        started = time.perf_counter()
        self.sql(query)
        return (time.perf_counter() - started) * 1000

    def stop(self) -> None:
        self.conn.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


# -- 1. serving: bucket-held objects against local ones --------------------------------------


def same(rows: list[list]) -> list[str]:
    """Rows in a comparable form: sorted (no ORDER BY), floats to 9 digits (parallel sums)."""
    return sorted(repr([f"{v:.9g}" if isinstance(v, float) else v for v in row]) for row in rows)


def serve(nanio: Nanio, work: Path, rows: int, requests: int) -> None:
    csv = workers_file(rows)
    bucket = nanio.new_bucket()
    print(
        f"\n## serve: {csv.name}, {rows:,} rows; {requests} requests per query and side, "
        f"alternating, after {WARMUP} warm-up; p50 ms"
    )
    for memory_cache in ("512MB", "0MB"):
        local = write_config(work / f"local-{memory_cache}", nanio, memory_cache=memory_cache)
        remote = write_config(
            work / f"s3-{memory_cache}",
            nanio,
            store=f"s3://{bucket}/lake-{memory_cache.lower()}/",
            memory_cache=memory_cache,
        )
        for config in (local, remote):
            lakehoused("ingest", str(csv), "--dataset", "workers", "--config", str(config))
        # Cold: the bucket daemon starts on an empty cache and downloads what its views read.
        shutil.rmtree(remote.parent / "var" / "state" / "cache", ignore_errors=True)
        daemons = {"local": Daemon(local), "s3": Daemon(remote)}
        try:
            cached = sum(
                p.stat().st_size for p in (remote.parent / "var/state/cache").rglob("*.parquet")
            )
            print(
                f"\nmemory_cache = {memory_cache!r}; start: local {daemons['local'].start_s:.2f} s, "
                f"bucket {daemons['s3'].start_s:.2f} s (its cache filled with "
                f"{cached / 1e6:.1f} MB at start)"
            )
            print(f"load average before: {load()}")
            print("query   local p50   s3 p50   local p90   s3 p90   ratio s3/local")
            for name, query in QUERIES.items():
                answers = {side: same(d.sql(query)) for side, d in daemons.items()}
                assert answers["local"] == answers["s3"], f"{name}: the two stores disagree"
                for _ in range(WARMUP):
                    for daemon in daemons.values():
                        daemon.sql(query)
                times: dict[str, list[float]] = {"local": [], "s3": []}
                for _ in range(requests):
                    for side, daemon in daemons.items():
                        times[side].append(daemon.timed(query))
                ratio = p50(times["s3"]) / p50(times["local"])
                verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
                print(
                    f"{name:5} {p50(times['local']):11.2f} {p50(times['s3']):8.2f} "
                    f"{p90(times['local']):11.2f} {p90(times['s3']):8.2f}   {ratio:5.2f} {verdict}"
                )
            print(f"load average after: {load()}  (target: ratio <= {TARGET_RATIO})")
        finally:
            for daemon in daemons.values():
                daemon.stop()


# -- 2. the alternative: pyarrow's S3 filesystem ----------------------------------------------


def pyarrow_s3(nanio: Nanio, work: Path, rows: int, runs: int) -> None:
    import duckdb
    import pyarrow.dataset as ds
    from pyarrow import fs

    from bench.s3server import ACCESS_KEY, SECRET_KEY

    config = work / "s3-512MB" / "config.toml"
    cached = sorted((config.parent / "var/state/cache/datasets/workers").glob("*.parquet"))
    if not cached:
        log("pyarrow: run with the serve section first (it writes the object)")
        return
    local_file = cached[-1]
    text = config.read_text()
    url = text.split('[store]\nurl = "')[1].split('"')[0]
    bucket, prefix = url.removeprefix("s3://").split("/", 1)
    key = f"{bucket}/{prefix}datasets/workers/{local_file.name}"
    s3 = fs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        endpoint_override=nanio.endpoint,
        scheme="http",
        region="us-east-1",
    )
    dataset = ds.dataset(key, format="parquet", filesystem=s3)
    print(
        f"\n## pyarrow: in-process DuckDB, {runs} runs per query after one warm-up; p50 ms\n"
        "cache: read_parquet over the cached local file (what the engine's views do);\n"
        "pyarrow-s3: a pyarrow dataset on pyarrow's S3 filesystem (ranged GETs per query)"
    )
    print(f"load average before: {load()}")
    print("query   cache p50   pyarrow-s3 p50   ratio s3/cache")
    for name, query in QUERIES.items():
        times: dict[str, list[float]] = {}
        for side in ("cache", "pyarrow-s3"):
            con = duckdb.connect()
            if side == "cache":
                con.execute(f"CREATE VIEW workers AS SELECT * FROM read_parquet('{local_file}')")
            else:
                con.register("workers", dataset)
            con.sql(query).to_arrow_table()
            times[side] = []
            for _ in range(runs):
                started = time.perf_counter()
                con.sql(query).to_arrow_table()
                times[side].append((time.perf_counter() - started) * 1000)
            con.close()
        ratio = p50(times["pyarrow-s3"]) / p50(times["cache"])
        print(
            f"{name:5} {p50(times['cache']):11.2f} {p50(times['pyarrow-s3']):16.2f}   {ratio:7.1f}"
        )
    print(f"load average after: {load()}")


# -- 3. upload -> queryable --------------------------------------------------------------------


def latency_csv(trial: int) -> bytes:
    start = trial * LATENCY_ROWS
    lines = ["id,name"] + [f"{i},row {i}" for i in range(start, start + LATENCY_ROWS)]
    return ("\n".join(lines) + "\n").encode()


def upload_latency(nanio: Nanio, work: Path, trials: int) -> list[float]:
    """Upload -> queryable, in ms, for `trials` uploads to a watched prefix."""
    inbox, store = nanio.new_bucket(), nanio.new_bucket()
    config = write_config(
        work / "latency", nanio, inbox=f"s3://{inbox}/drop/", store=f"s3://{store}/lake/"
    )
    client = nanio.client()
    daemon = Daemon(config)
    rng = random.Random(8)
    times = []
    try:
        for trial in range(trials + 1):  # the first warms the converters up: not counted
            body = latency_csv(trial)
            expected = trial * LATENCY_ROWS + LATENCY_ROWS - 1
            time.sleep(rng.uniform(0, RESCAN_S))
            # A new key each time (parts of an append dataset): re-uploading one key right
            # after its ingest can meet the archive's delete (see the README).
            key = f"drop/latency/part-{trial:03d}.csv"
            client.put_object(inbox, key, io.BytesIO(body), len(body))
            uploaded = time.perf_counter()
            deadline = uploaded + 30
            while time.perf_counter() < deadline:
                try:
                    if daemon.sql("SELECT max(id) FROM latency") == [[expected]]:
                        break
                except RuntimeError:
                    pass  # not a dataset yet
                time.sleep(0.005)
            else:
                raise RuntimeError(f"trial {trial} never became queryable")
            if trial:
                times.append((time.perf_counter() - uploaded) * 1000)
    finally:
        daemon.stop()
    return times


def latency(nanio: Nanio, work: Path, trials: int) -> None:
    print(
        f"\n## latency: upload -> queryable, {trials} uploads of a {LATENCY_ROWS:,}-row CSV "
        f"(append, a new key each), rescan_s = {RESCAN_S:g}, each after a random wait of "
        f"0-{RESCAN_S:g} s"
    )
    print(f"load average before: {load()}")
    times = upload_latency(nanio, work, trials)
    print("ms per trial: " + ", ".join(f"{t:.0f}" for t in times))
    verdict = "PASS" if p50(times) <= TARGET_LATENCY_MS else "MISS"
    print(
        f"p50 {p50(times):.0f} ms  p90 {p90(times):.0f} ms  min {min(times):.0f}  "
        f"max {max(times):.0f}  (target p50 <= {TARGET_LATENCY_MS} ms: {verdict})"
    )
    print(
        "nanio sends no bucket notifications; on MinIO each upload would start a listing "
        "at once instead of waiting for the next pass"
    )
    print(f"load average after: {load()}")


# -- 4. listing a prefix with many archived objects -------------------------------------------


def archive_by_hand(nanio: Nanio, bucket: str, count: int) -> None:
    """`count` objects under drop/.done/ (half of them in drop/.done/sales/), written into
    nanio's data directory with the metadata files nanio writes for an upload."""
    root = nanio.data_dir / bucket
    meta = root / ".nanio-meta"
    body = b"id,name\n1,a\n"
    info = {
        "etag": '"0c4b1b1e5d3d6f6a3b0b6b1d6d1f2c3a"',
        "size": len(body),
        "last_modified": datetime.now(UTC).isoformat(),
        "content_type": "text/csv",
        "user_metadata": {},
        "storage_class": "STANDARD",
        "content_encoding": None,
        "content_disposition": None,
        "cache_control": None,
    }
    sidecar = json.dumps(info, separators=(",", ":")).encode()
    for i in range(count):
        key = f"drop/.done/{'sales/' if i % 2 else ''}day-{i:06d}.csv"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)
        (meta / f"{key}.json").parent.mkdir(parents=True, exist_ok=True)
        (meta / f"{key}.json").write_bytes(sidecar)


def listing(nanio: Nanio, archived: int, passes: int = 20) -> None:
    from lakehoused.inbox.listing import PrefixWatcher
    from lakehoused.s3 import Bucket

    client = nanio.client()
    buckets = {}
    for label in ("empty", "full"):
        name = nanio.new_bucket()
        for i in range(10):
            key = f"drop/live-{i}.csv" if i < 8 else f"drop/sales/live-{i}.csv"
            client.put_object(name, key, io.BytesIO(b"id\n1\n"), 5)
        buckets[label] = Bucket(nanio.location(name, "drop/"), setting="inbox.url")
    log(f"writing {archived:,} archived objects into nanio's data directory ...")
    archive_by_hand(nanio, buckets["full"].name, archived)
    os.sync()  # the writes' flush must not be timed as listing

    def one_pass(bucket: Bucket) -> tuple[float, int]:
        watcher = PrefixWatcher(bucket, rescan_s=0, on_ready=lambda *a: None, notifications=False)
        started = time.perf_counter()
        watcher.scan()
        return (time.perf_counter() - started) * 1000, watcher.listings

    print(
        f"\n## listing: one pass of the bucket inbox over drop/ (10 live objects, one "
        f"sub-prefix), {passes} passes on each of two buckets, alternating"
    )
    print(f"load average before: {load()}")
    times: dict[str, list[float]] = {"empty": [], "full": []}
    requests = {}
    for _ in range(passes):
        for label, bucket in buckets.items():
            ms, requests[label] = one_pass(bucket)
            times[label].append(ms)
    for label, count in (("empty", 0), ("full", archived)):
        print(
            f"{count:>9,} archived objects   p50 {p50(times[label]):8.1f} ms  "
            f"p90 {p90(times[label]):8.1f} ms  {requests[label]} list requests per pass"
        )
    print(f"ratio with/without the archive (p50): {p50(times['full']) / p50(times['empty']):.2f}")
    started = time.perf_counter()
    every = sum(1 for _ in client.list_objects(buckets["full"].name, "drop/", recursive=True))
    naive = (time.perf_counter() - started) * 1000
    print(
        f"for scale, one recursive listing of drop/: {naive:,.0f} ms for {every:,} objects "
        f"({(every + 999) // 1000} requests)"
    )
    print(f"load average after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--archived", type=int, default=100_000)
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"# bench/bucket.py, {date.today()}, {os.cpu_count()} cores; nanio on 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="lh-bucket-bench-") as tmp:
        work = Path(tmp)
        nanio = Nanio(work / "nanio" / "data").start()
        try:
            if "serve" in only:
                serve(nanio, work, args.rows, args.requests)
            if "pyarrow" in only:
                pyarrow_s3(nanio, work, args.rows, args.requests)
            if "latency" in only:
                latency(nanio, work, args.trials)
            if "listing" in only:
                listing(nanio, args.archived)
        finally:
            nanio.stop()


if __name__ == "__main__":
    main()
