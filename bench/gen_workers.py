#!/usr/bin/env python3
"""Deterministic generator of a realistic "workers" CSV (standard library only).

Adapted from the team's shared data generator so tests and benchmarks carry their own copy.

    python gen_workers.py N OUT.csv [--seed S] [--na-rate R]

Columns: id, name, role, state, city, salary, bonus, hired_at, active, rating, notes

Traps for CSV readers, on purpose:
  * bonus   is numeric, except rare 'N/A' strings that only appear when id > 100000
            (late type ambiguity: a reader that samples the head infers DOUBLE).
  * notes   free text with commas, doubled quotes, empty values and ~1% quoted
            multi-line values (embedded newlines).
Rows are generated in fixed chunks from one seeded RNG stream, so the file for
N rows is a byte-exact prefix of the file for any larger N with the same seed.
"""

import argparse
import csv
import datetime
import random

CHUNK = 10_000  # fixed: the last chunk is generated whole and cut, keeping the prefix property
NA_AFTER_ID = 100_000  # 'N/A' in bonus only for id > NA_AFTER_ID
NA_RATE = 0.0005  # ~1 in 2000 rows after that (--na-rate 0: a "clean" file, otherwise identical)

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Chris Nancy Daniel Lisa Matthew "
    "Betty Anthony Sandra Mark Ashley Donald Emily Steven Kimberly Paul Donna Andrew Michelle "
    "Joshua Carol Kenneth Amanda Kevin Melissa Brian Deborah George Stephanie Timothy Rebecca "
    "José Zoë Renée Łukasz Nguyễn"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White "
    "Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres "
    "Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts "
    "O'Brien D'Angelo Müller"
).split()
ROLES = {  # role: (weight, base salary)
    "Software Engineer": (20, 125000),
    "Senior Software Engineer": (10, 160000),
    "Data Engineer": (8, 130000),
    "Data Analyst": (8, 85000),
    "Product Manager": (6, 140000),
    "Designer": (5, 100000),
    "QA Engineer": (5, 90000),
    "DevOps Engineer": (5, 135000),
    "Sales Representative": (10, 70000),
    "Account Manager": (6, 80000),
    "Customer Support": (10, 50000),
    "HR Specialist": (3, 65000),
    "Recruiter": (3, 60000),
    "Accountant": (3, 75000),
    "Office Manager": (2, 55000),
    "Director": (2, 200000),
    "VP, Engineering": (1, 260000),
    "Intern": (3, 35000),
}
LOCATIONS = [  # (state, city, weight)
    ("CA", "San Francisco", 9),
    ("CA", "Los Angeles", 7),
    ("CA", "San Diego", 3),
    ("NY", "New York", 12),
    ("NY", "Buffalo", 1),
    ("TX", "Austin", 6),
    ("TX", "Houston", 4),
    ("TX", "Dallas", 4),
    ("IL", "Chicago", 6),
    ("IL", "Springfield", 1),
    ("IL", "Naperville", 1),
    ("WA", "Seattle", 6),
    ("MA", "Boston", 5),
    ("CO", "Denver", 3),
    ("GA", "Atlanta", 3),
    ("FL", "Miami", 3),
    ("FL", "Orlando", 2),
    ("OR", "Portland", 2),
    ("NC", "Raleigh", 2),
    ("PA", "Philadelphia", 3),
    ("PA", "Pittsburgh", 1),
    ("OH", "Columbus", 2),
    ("MI", "Detroit", 2),
    ("MN", "Minneapolis", 2),
    ("AZ", "Phoenix", 2),
    ("UT", "Salt Lake City", 1),
    ("DC", "Washington", 2),
    ("VA", "Arlington", 1),
    ("NJ", "Jersey City", 1),
    ("TN", "Nashville", 1),
]
FRAGMENTS = [
    "joined from the Acme acquisition",
    "prefers remote work",
    "on-call rotation, week 2",
    'said "happy to mentor"',
    "relocated from Denver, CO",
    "promoted in Q3",
    'manager note: "exceeds expectations"',
    "part-time, 30h/week",
    "visa renewal pending",
    "speaks Spanish, French",
    "leads the 'platform' guild",
    "needs laptop refresh",
    'nickname "Doc"',
    "certified AWS, GCP",
    "parental leave 2023",
    "badge #4411, floor 3",
    "top seller, 120% of quota",
    'asked about the "4-day week"',
    "mentor: see HR file",
    "works Mon-Thu",
    "ergonomic chair requested",
    "5 years of service, award given",
    "contractor converted to FTE",
    "owns billing service; backup: payments",
]
HEADER = [
    "id",
    "name",
    "role",
    "state",
    "city",
    "salary",
    "bonus",
    "hired_at",
    "active",
    "rating",
    "notes",
]
START_DAY = datetime.date(2005, 1, 1).toordinal()
DATES = [datetime.date.fromordinal(START_DAY + i).isoformat() for i in range(20 * 365)]


def make_chunk(rng, first_id, n, na_rate=NA_RATE):
    ids = range(first_id, first_id + n)
    firsts = rng.choices(FIRST, k=n)
    lasts = rng.choices(LAST, k=n)
    roles = rng.choices(list(ROLES), weights=[w for w, _ in ROLES.values()], k=n)
    locs = rng.choices(LOCATIONS, weights=[w for *_, w in LOCATIONS], k=n)
    dates = rng.choices(DATES, k=n)
    rnd = rng.random
    rows = []
    for i, f, last, role, (st, city, _), d in zip(
        ids, firsts, lasts, roles, locs, dates, strict=True
    ):
        salary = round(ROLES[role][1] * (0.75 + 0.5 * rnd()), 2)
        na, bonus = rnd() < na_rate, round(salary * 0.15 * rnd(), 2)  # same draws for any rate
        if na and i > NA_AFTER_ID:
            bonus = "N/A"
        r = rnd()
        if r < 0.1:
            notes = ""
        elif r < 0.11:  # multi-line quoted field
            notes = "\n".join(rng.sample(FRAGMENTS, 3))
        else:
            notes = ", ".join(rng.sample(FRAGMENTS, 1 + int(r * 10) % 3))
        rows.append(
            (
                i,
                f + " " + last,
                role,
                st,
                city,
                salary,
                bonus,
                d,
                "true" if rnd() < 0.85 else "false",
                round(1 + 4 * rnd(), 1),
                notes,
            )
        )
    return rows


def write_workers(n, out, seed=42, na_rate=NA_RATE):
    """Write the first `n` rows of the workers file for `seed` to the path `out`."""
    rng = random.Random(seed)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(HEADER)
        for start in range(0, n, CHUNK):
            w.writerows(make_chunk(rng, start + 1, CHUNK, na_rate)[: n - start])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("n", type=int, help="number of data rows")
    ap.add_argument("out", help="output CSV path")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--na-rate", type=float, default=NA_RATE, help="share of 'N/A' bonus after id 100000"
    )
    a = ap.parse_args()
    write_workers(a.n, a.out, a.seed, a.na_rate)


if __name__ == "__main__":
    main()
