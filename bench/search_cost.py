"""What the search projection costs each append: the same events appended to a log with the
catalog alone and to one with the catalog and the FTS index, in alternating rounds.

    python bench/search_cost.py [EVENTS]

Prints microseconds per append for both, and their ratio, with synchronous=FULL (what the
daemon runs: an fsync per append) and synchronous=OFF (the CPU cost alone), and the load
average, since the machine is shared.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lakehoused.catalog import Catalog
from lakehoused.events import DatasetRegistered, IngestRejected, registration_id
from lakehoused.log import Event, EventLog
from lakehoused.search import EventSearch, Projections

ROUNDS = 4


def events(n: int, offset: int) -> list[Event]:
    """Half registrations (each a new version of one of 20 datasets), half rejections."""
    out: list[Event] = []
    for i in range(offset, offset + n):
        name = f"sales_{i % 20}"
        source = {
            "name": f"{name}/2026-11-{i:05d}.csv",
            "uri": f"file:///srv/inbox/{name}/2026-11-{i:05d}.csv",
            "sha256": f"{i:064x}",
            "bytes": 1000 + i,
            "mtime": "2026-11-29T12:00:00.000000Z",
        }
        if i % 2:
            reason = f"line {i}: expected 4 fields, got 5; quote values that hold the delimiter"
            out.append(IngestRejected(source, reason, {"line": i}, name).to_event())
            continue
        version = i // 20 + 1  # sales_k registers at i = k, k + 20, k + 40, ...
        registered = DatasetRegistered(
            dataset=name,
            version=version,
            mode="append",
            object={"key": f"datasets/{name}/{i:064x}.parquet", "sha256": f"{i:064x}"}
            | {"bytes": 4000, "rows": 100},
            source=source,
            schema=[{"name": "id", "type": "BIGINT", "nullable": False}],
            fingerprint="f" * 64,
        ).to_event()
        out.append(
            Event(
                registered.type,
                registered.data,
                registered.dataset,
                registration_id(name, source["sha256"], version - 1),
            )
        )
    return out


def timed(log: EventLog, batch: list[Event]) -> float:
    start = time.perf_counter()
    for event in batch:
        log.append(event)
    return time.perf_counter() - start


def measure(n: int, synchronous: str) -> tuple[float, float]:
    """Microseconds per append: (catalog alone, catalog and search)."""
    totals = [0.0, 0.0]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        logs = [
            EventLog(Path(tmp) / "catalog.db", Catalog()),
            EventLog(Path(tmp) / "search.db", Projections(Catalog(), EventSearch())),
        ]
        for log in logs:
            log.connection.execute(f"PRAGMA synchronous = {synchronous}")
        per_round = n // ROUNDS
        for r in range(ROUNDS):
            batch = events(per_round, r * per_round)
            order = (0, 1) if r % 2 == 0 else (1, 0)  # neither always goes first
            for which in order:
                totals[which] += timed(logs[which], batch)
        for log in logs:
            log.close()
    done = per_round * ROUNDS
    return totals[0] / done * 1e6, totals[1] / done * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"load average {os.getloadavg()[0]:.2f}; {n} appends per log")
    for synchronous in ("FULL", "OFF"):
        alone, both = measure(n, synchronous)
        print(
            f"synchronous={synchronous:<4}  catalog alone {alone:8.1f} us/append   "
            f"catalog+search {both:8.1f} us/append   +{both - alone:6.1f} us  "
            f"ratio {both / alone:.2f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
