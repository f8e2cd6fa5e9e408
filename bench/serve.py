#!/usr/bin/env python3
"""Serving benchmark: lakehoused's SQL API against ROAPI and in-process DuckDB, plus ingest latency.

    python bench/serve.py [--rows 500000] [--duration 10] [--clients 8] [--no-roapi]
                          [--no-ingest]

1. The "workers" CSV (bench/gen_workers.py, cached in bench/data/) is ingested with
   `lakehoused ingest --dataset workers` into two fresh temp roots (config.toml, inbox,
   store, state), and `lakehoused run` serves each on 127.0.0.1 with a free port: one with
   `server.result_cache = "0MB"` (cache off), one with the default (cache on).
2. ROAPI (`pip install roapi`, installed into this interpreter if missing) serves the very
   Parquet object lakehoused wrote, as table `workers`, on 127.0.0.1. Every server must
   answer Q1 alike (and every query with as many rows) before anything is measured.
3. Once the servers are idle (a daemon's converter processes load for a second or two
   after it starts): per query, latency over sequential requests on one keep-alive
   connection per server (after warm-up), the servers taking turns every 10 requests so
   that the shared machine's load falls on all alike; then per server, throughput with
   --clients concurrent keep-alive clients for
   --duration seconds: `wrk` when it is on PATH (it is installed with apt-get if missing
   and we are root), else a multi-process Python client. The load generator runs on the
   same cores as the server, for every server alike. Each query is asked again and again,
   so with the cache on every answer after the first is a cache hit: the ROAPI comparison
   of the cache-off server is the engine's own cost, the cache-on one a repeated query's.
4. The floor: the same SQL in-process with DuckDB on the same Parquet file, no HTTP.
5. Ingest latency: a 1,000-row CSV renamed into the running daemon's inbox, time until
   `SELECT max(id)` shows it, for a file written long before the move and one written
   just before it.

Both servers answer JSON (their default): lakehoused as {"columns", "rows": [[...]]},
ROAPI as [{column: value}, ...], so Q4's bodies differ in size; the table shows both.

It prints figures and never asserts on timing: a benchmark that fails on a busy machine
teaches nothing. The targets are printed as PASS/MISS beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"

# Run as a script, sys.path[0] is bench/; bench.gen_workers needs the repo root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUERIES = {
    "Q1": "SELECT count(*) FROM workers",
    "Q2": "SELECT role, count(*), avg(salary) FROM workers WHERE state='IL' GROUP BY role",
    "Q3": "SELECT * FROM workers WHERE id = 123456",
    "Q4": "SELECT * FROM workers LIMIT 10000",
}
WARMUP = 5
REQUESTS = 50
ROUND = 10  # sequential requests per server per turn
LATENCY_TRIALS = 20
LATENCY_ROWS = 1000
PREPARED_AGE_S = 1.5  # variant (a): written at least this long before the move
POLL_S = 0.005
TARGET_INGEST_P50_MS = 150  # issue 9: a fresh 1k-row file mv-ed in, default config
START_TIMEOUT_S = 60
# lakehoused twice: the result cache off (the ROAPI comparison) and on (repeated queries).
OFF, ON, ROAPI = "lh cache off", "lh cache on", "roapi"
TARGET_OFF_P50, TARGET_OFF_RPS = 1.0, 1.0  # ratios to ROAPI, result cache off
TARGET_ON_P50, TARGET_ON_RPS = 0.3, 5.0  # ratios to ROAPI, result cache on


# -- small helpers ---------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    """A port free on 127.0.0.1 now (ROAPI takes no port 0; the race is harmless here)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p50(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """The 90th percentile (inclusive method: never beyond the largest value seen)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def workers_file(rows: int) -> Path:
    """The cached workers CSV of `rows` rows, generated first if missing."""
    from bench.gen_workers import write_workers

    DATA.mkdir(exist_ok=True)
    path = DATA / f"workers_{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".csv.partial")  # an interrupted run must not be cached
        log(f"generating {path.name} ...")
        write_workers(rows, partial)
        partial.rename(path)
    return path


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, found by scanning /proc (works without CONFIG_PROC_CHILDREN)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name in field 2 may hold spaces and parentheses: split after it.
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def process_name(pid: int) -> str:
    """A short name for a process: its command line's most telling part."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in argv if a)
    if "multiprocessing" in text:
        return "resource_tracker" if "resource_tracker" in text else "converter (spawn)"
    return text[:60]


# -- the servers --------------------------------------------------------------------------------


@dataclass
class Server:
    """One HTTP SQL server under test and how to ask it a query."""

    name: str
    host: str
    port: int
    path: str
    process: subprocess.Popen
    output: list[str] = field(default_factory=list)

    @property
    def lakehoused(self) -> bool:
        """True for either lakehoused server."""
        return self.name != ROAPI

    def request(self, sql: str) -> tuple[str, bytes, dict[str, str]]:
        """(path, body, headers) of one SQL request."""
        if self.lakehoused:
            body = json.dumps({"sql": sql}).encode()
            return self.path, body, {"Content-Type": "application/json"}
        return self.path, sql.encode(), {"Content-Type": "text/plain"}

    def url(self) -> str:
        """The SQL endpoint's URL."""
        return f"http://{self.host}:{self.port}{self.path}"

    def rows(self, document: object) -> list[list]:
        """A JSON answer's rows as lists of values, whichever server wrote it."""
        if self.lakehoused:
            assert isinstance(document, dict)
            return document["rows"]
        assert isinstance(document, list)
        return [list(row.values()) for row in document]

    def stop(self) -> None:
        """SIGTERM, wait, and kill only if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within 30 s of SIGTERM; killing it")
                self.process.kill()
                self.process.wait()


def drain(process: subprocess.Popen, into: list[str]) -> None:
    """Keep reading a child's output so that it never blocks on a full pipe."""
    assert process.stdout is not None
    for line in process.stdout:
        into.append(line)


def ask(conn: http.client.HTTPConnection, server: Server, sql: str) -> tuple[int, bytes]:
    """One request on a kept-alive connection; (status, body)."""
    status, body, _ = ask_headers(conn, server, sql)
    return status, body


def ask_headers(
    conn: http.client.HTTPConnection, server: Server, sql: str
) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One request on a kept-alive connection; (status, body, headers)."""
    path, body, headers = server.request(sql)
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read(), response.headers


def query_rows(server: Server, sql: str) -> list[list]:
    """The rows of one query, on a connection of its own; raise on any error status."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        status, body = ask(conn, server, sql)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"{server.name}: HTTP {status} for {sql!r}: {body[:300]!r}")
    return server.rows(json.loads(body))


def wait_until_answering(server: Server, sql: str) -> None:
    """Poll until the server answers `sql` with 200, or fail naming its output."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        with contextlib.suppress(OSError, http.client.HTTPException, RuntimeError):
            query_rows(server, sql)
            return
        time.sleep(0.1)
    tail = "".join(server.output[-20:])
    raise RuntimeError(f"{server.name} did not start answering:\n{tail}")


def write_config(root: Path, result_cache: str | None) -> Path:
    """The daemon's config: everything under `root`, default settle_ms, a free port, and
    the result cache at `result_cache` (None: the default)."""
    (root / "inbox").mkdir(parents=True)
    config = root / "config.toml"
    cache = f'result_cache = "{result_cache}"\n' if result_cache is not None else ""
    config.write_text(
        '[inbox]\npath = "inbox"\n\n'
        '[store]\npath = "var/objects"\n\n'
        '[state]\npath = "var/state"\n\n'
        f'[server]\nhost = "127.0.0.1"\nport = 0\n{cache}',
        encoding="utf-8",
    )
    return config


def start_lakehoused(config: Path, name: str) -> Server:
    """`lakehoused run` as a subprocess; wait for its "serving on" line and /health."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lakehoused", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=config.parent,
    )
    output: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    url = None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("lakehoused: serving on "):
            url = line.split()[-1]
            break
    if url is None:
        process.kill()
        raise RuntimeError("lakehoused did not start:\n" + "".join(output))
    threading.Thread(target=drain, args=(process, output), daemon=True).start()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    server = Server(name, host, int(port), "/sql", process, output)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError("lakehoused /health never answered 200:\n" + "".join(output))


def roapi_binary() -> tuple[str | None, str]:
    """The roapi executable (installing the PyPI package if needed), or None and why not."""
    beside = Path(sys.executable).parent / "roapi"
    found = str(beside) if beside.exists() else shutil.which("roapi")
    if found:
        return found, ""
    log("roapi not found: pip install roapi ...")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "roapi"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"pip install roapi failed: {lines[-1] if lines else proc.returncode}"
    if beside.exists():
        return str(beside), ""
    found = shutil.which("roapi")
    return found, "" if found else "pip installed roapi but no roapi executable was found"


def start_roapi(binary: str, parquet: Path) -> Server:
    """ROAPI on 127.0.0.1 serving `parquet` as table `workers`.

    Its Postgres and FlightSQL endpoints are bound to 127.0.0.1 too: left to their
    defaults they would listen wherever ROAPI chooses.
    """
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "-a",
            f"127.0.0.1:{port}",
            "-p",
            f"127.0.0.1:{free_port()}",
            "--addr-flight-sql",
            f"127.0.0.1:{free_port()}",
            "-t",
            f"workers={parquet}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},  # a log line per request would cost it time
    )
    server = Server(ROAPI, "127.0.0.1", port, "/api/sql", process)
    threading.Thread(target=drain, args=(process, server.output), daemon=True).start()
    wait_until_answering(server, QUERIES["Q1"])
    return server


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Latency:
    """Sequential latencies of one query on one server, in ms, the body size, and the
    X-Cache header of the last answer (lakehoused only)."""

    times_ms: list[float]
    body_bytes: int
    cache: str = ""


def sequential(
    servers: dict[str, Server], sql: str, warmup: int, requests: int
) -> dict[str, Latency]:
    """Per server, `requests` timed requests after `warmup` untimed ones, each server on one
    keep-alive connection; the servers take turns in rounds of ROUND requests, so that a
    change in the machine's load (it is shared) falls on all of them alike."""
    conns = {
        side: http.client.HTTPConnection(s.host, s.port, timeout=60) for side, s in servers.items()
    }
    times: dict[str, list[float]] = {side: [] for side in servers}
    last: dict[str, tuple[int, str]] = {}
    try:
        for side, server in servers.items():
            for _ in range(warmup):
                ask(conns[side], server, sql)
        for _ in range(0, requests, ROUND):
            for side, server in servers.items():
                for _ in range(ROUND):
                    start = time.perf_counter()
                    status, body, headers = ask_headers(conns[side], server, sql)
                    elapsed = time.perf_counter() - start
                    if status != 200:
                        raise RuntimeError(f"{server.name}: HTTP {status}: {body[:300]!r}")
                    times[side].append(elapsed * 1000)
                    last[side] = (len(body), headers.get("X-Cache", ""))
    finally:
        for conn in conns.values():
            conn.close()
    return {side: Latency(times[side], *last[side]) for side in servers}


def wait_idle_cpu(servers: dict[str, Server], limit_s: float = 30) -> float:
    """Until the servers' processes (converters included) stop using the CPU, as after a
    start their converter processes are still loading; seconds waited."""
    started = time.monotonic()
    tick = os.sysconf("SC_CLK_TCK")

    def used() -> float:
        total = 0
        for server in servers.values():
            for pid in (server.process.pid, *descendants(server.process.pid)):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    before = used()
    while time.monotonic() - started < limit_s:
        time.sleep(0.5)
        now = used()
        if now - before < 0.05:  # under a tenth of a core over the half second
            break
        before = now
    return time.monotonic() - started


@dataclass
class Throughput:
    """Completed requests per second under concurrent load, and what went wrong."""

    per_s: float
    errors: int
    tool: str


def lua_string(text: str) -> str:
    """`text` as a Lua long-bracket literal that no SQL here can close early."""
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def wrk_load(server: Server, sql: str, clients: int, duration: float, work: Path) -> Throughput:
    """Throughput by wrk with a POST script; non-2xx answers and socket errors counted."""
    path, body, headers = server.request(sql)
    script = work / f"wrk_{server.name}.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {lua_string(body.decode())}"]
    # A space after "[": "headers[[" would open a Lua long string instead of indexing.
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    threads = max(1, min(2, clients))
    proc = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://{server.host}:{server.port}{path}",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    per_s, errors = 0.0, 0
    for line in proc.stdout.splitlines():
        text = line.strip()
        if text.startswith("Requests/sec:"):
            per_s = float(text.split()[1])
        elif text.startswith("Non-2xx or 3xx responses:"):
            errors += int(text.split()[-1])
        elif text.startswith("Socket errors:"):
            # "Socket errors: connect 0, read 0, write 0, timeout 0"
            errors += sum(int(part.split()[-1]) for part in text.split(":", 1)[1].split(","))
    return Throughput(per_s, errors, f"wrk -t{threads} -c{clients}")


def _client(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    start_at: float,
    stop_at: float,
    results: multiprocessing.Queue,
) -> None:
    """One Python load client: a keep-alive loop until `stop_at` (time.time() based, so
    that every process agrees on the window); puts (completed, errors) on `results`."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    done = errors = 0
    while time.time() < start_at:
        time.sleep(0.001)
    try:
        while time.time() < stop_at:
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    done += 1
                else:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
    finally:
        conn.close()
        results.put((done, errors))


def python_load(server: Server, sql: str, clients: int, duration: float) -> Throughput:
    """Throughput by `clients` processes, each with one keep-alive http.client loop."""
    context = multiprocessing.get_context("spawn")  # no inherited threads or sockets
    results: multiprocessing.Queue = context.Queue()
    path, body, headers = server.request(sql)
    # Spawning takes a while: start the window only once every client can be running.
    start_at = time.time() + 1.0 + 0.1 * clients
    stop_at = start_at + duration
    procs = [
        context.Process(
            target=_client,
            args=(server.host, server.port, path, body, headers, start_at, stop_at, results),
        )
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    counts = [results.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join()
    done = sum(c[0] for c in counts)
    return Throughput(done / duration, sum(c[1] for c in counts), f"python x{clients}")


def ensure_wrk() -> tuple[bool, str]:
    """wrk on PATH, installing the Debian package when we are root; (found, note)."""
    if shutil.which("wrk"):
        return True, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False, "wrk not on PATH (and cannot apt-get install it here)"
    log("wrk not found: apt-get update && apt-get install -y wrk ...")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            return False, f"{' '.join(command)} failed: {lines[-1] if lines else proc.returncode}"
    return bool(shutil.which("wrk")), ""


def duckdb_floor(parquet: Path, warmup: int, runs: int) -> dict[str, list[float]]:
    """The same SQL in-process on the same file, no HTTP: the floor any server sits on.

    The view is defined like lakehoused's own, so the SQL text is the same everywhere.
    """
    import duckdb

    con = duckdb.connect()
    path = str(parquet).replace("'", "''")
    con.execute(f"CREATE VIEW workers AS SELECT * FROM read_parquet(['{path}'])")
    times: dict[str, list[float]] = {}
    for name, sql in QUERIES.items():
        times[name] = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            relation = con.sql(sql)
            # Q4's result is wide: Arrow is how a server would take it out of DuckDB.
            if name == "Q4":
                relation.arrow()
            else:
                relation.fetchall()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    con.close()
    return times


def ingest_latency(server: Server, root: Path, prepared: bool) -> list[float | None]:
    """Rename-to-visible times in ms of LATENCY_TRIALS drops of latency.csv (None: timed out).

    Each trial's file has its own ids, so `max(id)` tells exactly when it became visible.
    With `prepared`, every file is written up front and the first move waits until they
    are PREPARED_AGE_S old; else each is written just before its move.
    """
    inbox = root / "inbox"
    outside = root / ("prepared" if prepared else "fresh")
    outside.mkdir()
    base = 10_000_000 if prepared else 20_000_000  # the variants never share a max id

    def write(trial: int) -> tuple[Path, int]:
        first = base + trial * 10_000
        path = outside / f"latency_{trial}.csv"
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("id,amount,note\n")
            fh.writelines(f"{i},{i * 1.5},row {i}\n" for i in range(first, first + LATENCY_ROWS))
        return path, first + LATENCY_ROWS - 1

    files = [write(t) for t in range(LATENCY_TRIALS)] if prepared else []
    if prepared:
        time.sleep(PREPARED_AGE_S)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    sql = "SELECT max(id) FROM latency"
    results: list[float | None] = []
    try:
        for trial in range(LATENCY_TRIALS):
            wait_idle(server, inbox)
            path, expected = files[trial] if prepared else write(trial)
            moved = time.perf_counter()
            os.rename(path, inbox / "latency.csv")
            seen: float | None = None
            deadline = moved + 30
            while time.perf_counter() < deadline:
                status, body = ask(conn, server, sql)
                if status == 200 and server.rows(json.loads(body)) == [[expected]]:
                    seen = (time.perf_counter() - moved) * 1000
                    break
                time.sleep(POLL_S)
            results.append(seen)
    finally:
        conn.close()
    shown = ", ".join("timeout" if t is None else f"{t:.0f}" for t in results)
    log(f"ingest latency ({'prepared' if prepared else 'fresh'}), ms per trial: {shown}")
    return results


def wait_idle(server: Server, inbox: Path) -> None:
    """Until the last drop is archived and the daemon has nothing pending or in flight."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not (inbox / "latency.csv").exists():
            conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
            try:
                conn.request("GET", "/status")
                status = json.loads(conn.getresponse().read())
            finally:
                conn.close()
            if not status["files_pending"] and not status["in_flight"]:
                return
        time.sleep(0.02)
    raise RuntimeError("the daemon did not finish the previous drop within 30 s")


# -- the report ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def ratio(mine: float, peer: float) -> float:
    """mine / peer, infinite when the peer measured nothing."""
    return mine / peer if peer else float("inf")


def report(
    rows: int,
    parquet: Path,
    latency: dict[str, dict[str, Latency]],
    throughput: dict[str, dict[str, Throughput]],
    floor: dict[str, list[float]],
    notes: list[str],
) -> None:
    """Latency and throughput, the result cache off and on side by side, against ROAPI;
    then the details and the notes."""
    have_roapi = ROAPI in latency
    print(
        f"{'p50 ms':<7}{'off':>9}{'on':>9}{'roapi':>9}{'duckdb':>9}"
        f"{'off/roapi':>12} {'(<=' + format(TARGET_OFF_P50, 'g') + ')':<7}"
        f"{'on/roapi':>10} {'(<=' + format(TARGET_ON_P50, 'g') + ')':<7}"
    )
    for name in QUERIES:
        off, on = p50(latency[OFF][name].times_ms), p50(latency[ON][name].times_ms)
        line = f"{name:<7}{off:9.2f}{on:9.2f}"
        if have_roapi:
            ro = p50(latency[ROAPI][name].times_ms)
            r_off, r_on = ratio(off, ro), ratio(on, ro)
            line += f"{ro:9.2f}{p50(floor[name]):9.2f}"
            line += f"{r_off:12.2f} {verdict(r_off <= TARGET_OFF_P50):<7}"
            line += f"{r_on:10.2f} {verdict(r_on <= TARGET_ON_P50):<7}"
        else:
            line += f"{'-':>9}{p50(floor[name]):9.2f}"
        print(line)
    print()
    print(
        f"{'req/s':<7}{'off':>9}{'on':>9}{'roapi':>9}{'':>9}"
        f"{'off/roapi':>12} {'(>=' + format(TARGET_OFF_RPS, 'g') + ')':<7}"
        f"{'on/roapi':>10} {'(>=' + format(TARGET_ON_RPS, 'g') + ')':<7}"
    )
    for name in QUERIES:
        off, on = throughput[OFF][name].per_s, throughput[ON][name].per_s
        line = f"{name:<7}{off:9.0f}{on:9.0f}"
        if have_roapi:
            ro = throughput[ROAPI][name].per_s
            r_off, r_on = ratio(off, ro), ratio(on, ro)
            line += f"{ro:9.0f}{'':>9}"
            line += f"{r_off:12.2f} {verdict(r_off >= TARGET_OFF_RPS):<7}"
            line += f"{r_on:10.2f} {verdict(r_on >= TARGET_ON_RPS):<7}"
        print(line)
    print(
        "targets, against ROAPI in this run: result cache off (item 1) p50 <= "
        f"{TARGET_OFF_P50:g}x and req/s >= {TARGET_OFF_RPS:g}x; result cache on, repeated "
        f"queries (item 2) p50 <= {TARGET_ON_P50:g}x and req/s >= {TARGET_ON_RPS:g}x"
    )
    print()
    sides = [s for s in (OFF, ON, ROAPI) if s in latency]
    print(f"{'query':<7}{'side':<14}{'p90 ms':>9}{'bytes':>11}{'errors':>8}  X-Cache")
    for name in QUERIES:
        for side in sides:
            lat, thr = latency[side][name], throughput[side][name]
            print(
                f"{name:<7}{side:<14}{p90(lat.times_ms):9.2f}{lat.body_bytes:11,}"
                f"{thr.errors:8}  {lat.cache or '-'}"
            )
    print(f"{'':7}{'duckdb':<14}" + "  ".join(f"{n} p90 {p90(floor[n]):.2f}" for n in QUERIES))
    print(
        f"(errors: non-200 answers and socket errors during the throughput runs; X-Cache of "
        f"the last sequential answer; {rows:,} rows, Parquet object "
        f"{parquet.stat().st_size / 1e6:.1f} MB)"
    )
    for note in notes:
        print(note)


def print_rss(server: Server) -> None:
    """The server's VmRSS, and its children's (lakehoused's converters) one by one."""
    own = rss_kib(server.process.pid)
    children = descendants(server.process.pid)
    total = own + sum(rss_kib(pid) for pid in children)
    print(f"RSS {server.name}: {total / 1024:.0f} MiB in all; main process {own / 1024:.0f} MiB")
    for pid in children:
        print(f"    child {pid} {process_name(pid)}: {rss_kib(pid) / 1024:.0f} MiB")


def print_ingest(name: str, times: list[float | None]) -> None:
    """p50/p90 of one variant against the target; timed-out trials counted apart."""
    seen = [t for t in times if t is not None]
    lost = len(times) - len(seen)
    if not seen:
        print(f"{name}: every trial timed out")
        return
    mid = p50(seen)
    print(
        f"{name}: p50 {mid:6.0f} ms  p90 {p90(seen):6.0f} ms  min {min(seen):5.0f}  "
        f"max {max(seen):5.0f}  (target p50 <= {TARGET_INGEST_P50_MS} ms: "
        f"{verdict(mid <= TARGET_INGEST_P50_MS)})" + (f"  {lost} timed out" if lost else "")
    )


# -- main -----------------------------------------------------------------------------------


def serve_from_a_bucket(rows: int) -> None:
    """Q1-Q4 over objects held in nanio against the same over a local store, alternating,
    in one run (bench/bucket.py's serve section); the ratio's target is <= 1.1 once cached."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import bucket

    with tempfile.TemporaryDirectory(prefix="lh-serve-s3-") as tmp:
        work = Path(tmp)
        nanio = bucket.Nanio(work / "nanio" / "data").start()
        try:
            bucket.serve(nanio, work, rows, requests=50)
        finally:
            nanio.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000, help="workers rows (default 500,000)")
    ap.add_argument("--duration", type=float, default=10, help="seconds per throughput run")
    ap.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    ap.add_argument("--no-roapi", action="store_true", help="measure lakehoused alone")
    ap.add_argument("--no-ingest", action="store_true", help="skip the ingest-latency trials")
    ap.add_argument(
        "--store",
        choices=("local", "s3"),
        default="local",
        help="s3: the objects held in a bucket (nanio), beside the local store in the same run",
    )
    ap.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if available (auto), or the Python multi-process client",
    )
    a = ap.parse_args()
    if a.store == "s3":
        serve_from_a_bucket(a.rows)
        return

    notes: list[str] = []
    source = workers_file(a.rows)
    DATA.mkdir(exist_ok=True)
    # Beside the cached CSV, on the same disk: /tmp may be a tmpfs, which would be RAM.
    root = Path(tempfile.mkdtemp(prefix="serve-", dir=DATA))
    servers: dict[str, Server] = {}
    try:
        # Two daemons, each with its own state: identical but for the result cache.
        roots = {OFF: root / "off", ON: root / "on"}
        for side, result_cache in ((OFF, "0MB"), (ON, None)):
            config = write_config(roots[side], result_cache)
            log(f"{side}: ingesting {source.name} as dataset workers ...")
            command = [sys.executable, "-m", "lakehoused", "ingest", "--config", str(config)]
            subprocess.run(
                [*command, "--dataset", "workers", str(source)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            servers[side] = start_lakehoused(config, side)
        objects = sorted((roots[OFF] / "var/objects/datasets/workers").glob("*.parquet"))
        if len(objects) != 1:
            raise RuntimeError(f"expected one Parquet object for workers, found {objects}")
        parquet = objects[0]

        if not a.no_roapi:
            binary, why = roapi_binary()
            if binary is None:
                notes.append(f"ROAPI skipped: {why}")
                log(notes[-1])
            else:
                servers[ROAPI] = start_roapi(binary, parquet)
                version = subprocess.run([binary, "--version"], capture_output=True, text=True)
                notes.append(f"ROAPI: {version.stdout.strip()}")

        # Same answers before any timing: Q1 exactly, the others by row count.
        for name, sql in QUERIES.items():
            answers = {side: query_rows(s, sql) for side, s in servers.items()}
            first = answers[OFF]
            for side, rows in answers.items():
                if name == "Q1" and rows != first:
                    raise RuntimeError(f"Q1 differs: {OFF} {first}, {side} {rows}")
                if len(rows) != len(first):
                    raise RuntimeError(f"{name}: {OFF} {len(first)} rows, {side} {len(rows)}")
            if name == "Q1":
                notes.append(f"Q1 answer: {first[0][0]:,} (every server agrees)")

        use_wrk = False
        if a.load in ("auto", "wrk"):
            use_wrk, why = ensure_wrk()
            if not use_wrk:
                if a.load == "wrk":
                    raise RuntimeError(why)
                notes.append(f"wrk unavailable ({why}): Python load client used")

        latency: dict[str, dict[str, Latency]] = {side: {} for side in servers}
        throughput: dict[str, dict[str, Throughput]] = {side: {} for side in servers}
        load_before = os.getloadavg()
        waited = wait_idle_cpu(servers)
        notes.append(f"waited {waited:.1f} s after the servers started, until they were idle")
        for name, sql in QUERIES.items():
            log(f"{name}: {REQUESTS} sequential requests per server, servers taking turns ...")
            for side, measured in sequential(servers, sql, WARMUP, REQUESTS).items():
                latency[side][name] = measured
            # Server by server within each query, so a change in machine load hits all.
            for side, server in servers.items():
                log(f"{name} {side}: {a.clients} clients for {a.duration:g} s ...")
                if use_wrk:
                    throughput[side][name] = wrk_load(server, sql, a.clients, a.duration, root)
                else:
                    throughput[side][name] = python_load(server, sql, a.clients, a.duration)
        load_after = os.getloadavg()
        log("DuckDB in-process floor ...")
        floor = duckdb_floor(parquet, WARMUP, REQUESTS)
        tool = next(iter(throughput[OFF].values())).tool

        print(
            f"{date.today()}: {source.name}, {a.rows:,} rows; {REQUESTS} sequential requests "
            f"after {WARMUP} warm-up on one keep-alive connection per server, the servers "
            f"taking turns every {ROUND}; throughput: {tool}, "
            f"{a.duration:g} s per query and server; JSON answers"
        )
        print(
            f"{os.cpu_count()} cores, shared with the load generator; load average (1 min) "
            f"before/after the HTTP runs: {load_before[0]:.2f}/{load_after[0]:.2f}"
        )
        print()
        report(a.rows, parquet, latency, throughput, floor, notes)
        print()
        for server in servers.values():
            print_rss(server)

        for side in (ROAPI, OFF):  # their cores are the remaining daemon's from here on
            if side in servers:
                servers.pop(side).stop()
        if a.no_ingest:
            return
        print()
        print(
            f"ingest latency: {LATENCY_TRIALS} trials, a {LATENCY_ROWS:,}-row CSV renamed into "
            "the inbox as latency.csv (replace), until SELECT max(id) shows it; default config"
        )
        log("ingest latency (a) prepared files ...")
        print_ingest(
            f"(a) written >= {PREPARED_AGE_S:g} s before the move",
            ingest_latency(servers[ON], roots[ON], prepared=True),
        )
        log("ingest latency (b) fresh files ...")
        print_ingest(
            "(b) written just before the move    ",
            ingest_latency(servers[ON], roots[ON], prepared=False),
        )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
