#!/usr/bin/env python3
"""Conversion benchmark: lakehoused's CSV-to-Parquet conversion against plain DuckDB.

    python bench/ingest.py [--big] [--rows N] [--runs K] [--keep-data]

Both sides convert the same "workers" file (bench/gen_workers.py), alternating, K times:

* lakehoused: `convert(csv, out.parquet, CsvFormat(), dataset="workers")`;
* DuckDB:     `COPY (SELECT * FROM read_csv(csv, sample_size=-1)) TO out.parquet`, in a
              fresh connection with default settings (the full-file sniff is the fair
              baseline: with the default sample DuckDB types `bonus` DOUBLE and fails late).

Every run of every side is a fresh subprocess, so that each side's peak RSS is its own and
no run inherits the previous one's caches or allocator state. The child imports only what
its side converts with, times only the conversion, and reports its CPU time and its RSS
after imports as well as its peak, so the conversion's own footprint is visible. Targets:
a wall-time ratio <= 0.85 on the 500k-row file, <= 0.75 on the 5M-row one (--big), and a
peak RSS <= 300 MiB on both. The script prints figures and never asserts on timing: a benchmark
that fails on a busy machine teaches nothing.

The CSV is cached in bench/data/ (git-ignored) by row count and reused; --keep-data also
keeps the last run's Parquet outputs there for inspection.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
DEFAULT_ROWS = 500_000
BIG_ROWS = 5_000_000
SIDES = ("lakehoused", "duckdb")
TARGET_RATIO = 0.85  # on the 500k-row file; 0.75 on the 5M-row one (--big)
TARGET_RATIO_BIG = 0.75
TARGET_RSS_MIB = 300

# Run as a script, sys.path[0] is bench/; the children and the checks need the repo root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _mib(kib: int) -> float:
    # ru_maxrss is KiB on Linux but bytes on macOS.
    return kib / (1 << 20) if sys.platform == "darwin" else kib / 1024


def _current_rss_mib() -> float:
    """This process's resident set now (VmRSS); the peak so far where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _convert(side: str, source: Path, target: Path) -> int:
    """One side's conversion; the number of rows written."""
    if side == "lakehoused":
        from lakehoused.ingest import CsvFormat, convert

        return convert(source, target, CsvFormat(), dataset="workers").rows
    import duckdb

    con = duckdb.connect()  # inside the timing because lakehoused's convert() connects too
    try:
        path = str(source).replace("'", "''")
        out = str(target).replace("'", "''")
        return con.execute(
            f"COPY (SELECT * FROM read_csv('{path}', sample_size=-1)) TO '{out}' (FORMAT parquet)"
        ).fetchone()[0]
    finally:
        con.close()


def _error_text(error: BaseException) -> str:
    """The error and the first line of its cause: a wrapper's message alone may say nothing."""
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error) else ''}"
    if error.__cause__ is not None:
        cause = str(error.__cause__).strip().splitlines()
        text += f" <- {type(error.__cause__).__name__}: {cause[0] if cause else ''}"
    return text


def child(side: str, source: Path, target: Path) -> None:
    """Run one conversion in this (fresh) process and print its figures as one JSON line."""
    # Imports first, so that the RSS measured before the conversion includes them; each side
    # imports only what it converts with (the converter no longer uses DuckDB).
    if side == "lakehoused":
        import lakehoused.ingest.convert  # noqa: F401
    else:
        import duckdb  # noqa: F401
    rss_before = _current_rss_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    result: dict = {}
    start = time.perf_counter()
    try:
        result["rows"] = _convert(side, source, target)
    except Exception as e:  # a failed run is a figure too (e.g. out of memory on big files)
        result["error"] = _error_text(e)
    result["seconds"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - cpu_before
    result["bytes_out"] = target.stat().st_size if target.exists() else 0
    result["rss_before_mib"] = rss_before
    result["peak_rss_mib"] = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps(result))


def run_child(side: str, source: Path, target: Path) -> dict:
    """One conversion in a fresh interpreter; the figures it printed."""
    target.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", side, str(source), str(target)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        sys.exit(f"{side} child crashed (exit {proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def workers_file(rows: int) -> Path:
    """The cached workers CSV of `rows` rows, generated first if missing."""
    from bench.gen_workers import write_workers

    DATA.mkdir(exist_ok=True)
    path = DATA / f"workers_{rows}.csv"
    if not path.exists():
        partial = path.with_suffix(".csv.partial")  # an interrupted run must not be cached
        start = time.perf_counter()
        print(f"generating {path.name} ...", flush=True)
        write_workers(rows, partial)
        partial.rename(path)
        print(f"  generated in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def warm_page_cache(path: Path) -> None:
    """Read the file once, so the first timed run does not alone pay for the disk."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def checks(source: Path, ours: Path, theirs: Path) -> list[str]:
    """The `bonus` trap: both outputs must keep it VARCHAR, ours with every N/A intact."""
    import duckdb

    con = duckdb.connect()
    src = str(source).replace("'", "''")
    # all_varchar makes the count cheap and independent of any type inference.
    (csv_na,) = con.execute(
        f"SELECT count(*) FILTER (WHERE bonus = 'N/A') FROM read_csv('{src}', all_varchar=true)"
    ).fetchone()

    def bonus_type(parquet: Path) -> str:
        rows = con.execute(f"DESCRIBE SELECT bonus FROM read_parquet('{parquet}')").fetchall()
        return rows[0][1]

    # The cast keeps the count valid when a small file has no N/A and bonus is DOUBLE.
    (our_na,) = con.execute(
        f"SELECT count(*) FILTER (WHERE bonus::VARCHAR = 'N/A') FROM read_parquet('{ours}')"
    ).fetchone()
    ours_type, theirs_type = bonus_type(ours), bonus_type(theirs)
    con.close()
    if csv_na == 0:  # N/A only appears after id 100,000: nothing to keep in a smaller file
        return [f"bonus: no 'N/A' in this file (rows <= 100,000?); types {ours_type}/{theirs_type}"]

    def verdict(ok: bool) -> str:
        return "ok" if ok else "WRONG"

    return [
        f"bonus in lakehoused's output: {ours_type}, {our_na} 'N/A' (CSV has {csv_na}): "
        f"{verdict(ours_type == 'VARCHAR' and our_na == csv_na)}",
        f"bonus in DuckDB's sample_size=-1 output: {theirs_type}: "
        f"{verdict(theirs_type == 'VARCHAR')}",
    ]


def upload_to_queryable(trials: int = 20) -> None:
    """A 1,000-row CSV uploaded under a watched prefix of nanio until it answers a query, with
    rescan_s = 1 (bench/bucket.py's latency section); target p50 <= 1 s."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import bucket

    with tempfile.TemporaryDirectory(prefix="lh-ingest-s3-") as tmp:
        work = Path(tmp)
        nanio = bucket.Nanio(work / "nanio" / "data").start()
        try:
            bucket.latency(nanio, work, trials)
        finally:
            nanio.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--big", action="store_true", help=f"{BIG_ROWS:,} rows (~675 MB), 3 runs")
    ap.add_argument("--rows", type=int, help=f"rows to generate (default {DEFAULT_ROWS:,})")
    ap.add_argument("--runs", type=int, help="runs per side (default 5; 3 with --big)")
    ap.add_argument("--keep-data", action="store_true", help="keep the last Parquet outputs")
    ap.add_argument(
        "--bucket",
        action="store_true",
        help="a bucket inbox instead: upload -> queryable, p50 over 20 files (bench/bucket.py)",
    )
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "CSV", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.bucket:
        upload_to_queryable()
        return
    if a.child:
        side, source, target = a.child
        child(side, Path(source), Path(target))
        return

    rows = a.rows or (BIG_ROWS if a.big else DEFAULT_ROWS)
    runs = a.runs or (3 if a.big else 5)
    source = workers_file(rows)
    input_mb = source.stat().st_size / 1e6
    # Outputs beside the input, on the same disk: /tmp may be a tmpfs, which would be RAM.
    outputs = {side: DATA / f"out_{side}_{rows}.parquet" for side in SIDES}
    warm_page_cache(source)
    load_before = os.getloadavg()

    results: dict[str, list[dict]] = {side: [] for side in SIDES}
    for i in range(runs):
        # Alternating, so that a change in machine load falls on both sides alike.
        for side in SIDES:
            r = run_child(side, source, outputs[side])
            results[side].append(r)
            outcome = f"FAILED: {r['error']}" if "error" in r else ""
            print(
                f"  run {i + 1}/{runs} {side:<10} {r['seconds']:6.2f} s  "
                f"cpu {r['cpu_seconds']:6.2f} s  peak {r['peak_rss_mib']:5.0f} MiB  {outcome}".rstrip(),
                flush=True,
            )
    load_after = os.getloadavg()

    print()
    print(f"{date.today()}: {source.name}, {rows:,} rows, {input_mb:.1f} MB; {runs} runs per side")
    print(
        f"{'side':<11}{'median s':>9}{'min s':>8}{'cpu s':>7}{'MB/s':>7}{'rows':>11}{'out MB':>8}"
        f"{'RSS before':>11}{'peak RSS':>10}{'delta':>7}  (MiB)"
    )
    medians: dict[str, float] = {}
    cpus: dict[str, float] = {}
    peaks = {side: max(r["peak_rss_mib"] for r in results[side]) for side in SIDES}
    for side in SIDES:
        before = max(r["rss_before_mib"] for r in results[side])
        ok = [r for r in results[side] if "error" not in r]
        failed = len(results[side]) - len(ok)
        memory = f"{before:11.0f}{peaks[side]:10.0f}{peaks[side] - before:7.0f}"
        if not ok:
            print(f"{side:<11}{'failed':>9}{'':>8}{'':>7}{'':>7}{'':>11}{'':>8}{memory}")
            continue
        medians[side] = statistics.median(r["seconds"] for r in ok)
        cpus[side] = statistics.median(r["cpu_seconds"] for r in ok)
        print(
            f"{side:<11}{medians[side]:9.2f}{min(r['seconds'] for r in ok):8.2f}"
            f"{cpus[side]:7.2f}{input_mb / medians[side]:7.1f}{ok[-1]['rows']:>11,}"
            f"{ok[-1]['bytes_out'] / 1e6:8.1f}{memory}"
            + (f"  ({failed} of {runs} runs failed)" if failed else "")
        )
    for side in SIDES:
        errors = sorted({r["error"] for r in results[side] if "error" in r})
        for error in errors:
            print(f"{side} failed: {error}")
    if len(medians) == len(SIDES):
        ratio = medians["lakehoused"] / medians["duckdb"]
        ratio_text = f"{ratio:.2f}"
    else:
        ratio_text = "n/a (a side failed every run)"
    target = TARGET_RATIO_BIG if rows >= BIG_ROWS else TARGET_RATIO
    print(f"ratio lakehoused/duckdb (median wall time): {ratio_text} (target <= {target:.2f})")
    if len(cpus) == len(SIDES):
        # On a busy machine wall time is shared out; CPU time is what each side spent.
        print(
            f"ratio lakehoused/duckdb (median CPU time): {cpus['lakehoused'] / cpus['duckdb']:.2f}"
        )
    # A failed run's peak is only how far it got, so it must not read as a pass.
    partial = " (runs failed: peak up to the failure)" if "lakehoused" not in medians else ""
    print(
        f"peak RSS lakehoused: {peaks['lakehoused']:.0f} MiB "
        f"(target <= {TARGET_RSS_MIB} MiB, flat in file size){partial}"
    )
    # RUSAGE_CHILDREN is the max over every child reaped so far: it can only confirm the
    # largest child's own figure, which is why each child reports its own ru_maxrss.
    children = _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(f"largest child seen from outside (RUSAGE_CHILDREN): {children:.0f} MiB")
    last = {side: results[side][-1] for side in SIDES}
    if all("error" not in r for r in last.values()):
        if last["lakehoused"]["rows"] != last["duckdb"]["rows"]:
            print("row counts DIFFER between the two sides")
        for line in checks(source, outputs["lakehoused"], outputs["duckdb"]):
            print(line)
    else:
        print("bonus checks skipped: the last run of a side failed")
    print(
        f"load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f} "
        f"on {os.cpu_count()} cores"
    )
    if not a.keep_data:
        for path in outputs.values():
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
