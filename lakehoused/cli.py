"""The `lakehoused` command: a thin layer that builds objects, calls one method, and turns
a LakehousedError into a message and an exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lakehoused import __version__, events, lifecycle, logs, operations, timetravel
from lakehoused.config import Config, load_config
from lakehoused.errors import LakehousedError, UnknownDataset
from lakehoused.lakehouse import Lakehouse
from lakehoused.log import StoredEvent
from lakehoused.progress import ProgressBar
from lakehoused.query import Answer

FORMATS = ("json", "ndjson", "csv", "arrow", "table")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $LAKEHOUSED_CONFIG, then ./config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="lakehoused",
        parents=[common],
        description="A folder turned into a small, trustworthy lakehouse: CSV in, SQL out.",
    )
    parser.add_argument("--version", action="version", version=f"lakehoused {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_)

    run = command("run", "run the daemon: watch the inbox, ingest, serve SQL over HTTP")
    run.add_argument(
        "--log-format", choices=logs.FORMATS, default="text", help="log lines as text or JSON"
    )
    ingest = command("ingest", "ingest files once, through the daemon's own code path")
    ingest.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ingest.add_argument("--dataset", help="dataset name (default: from the file's name or folder)")
    ingest.add_argument("--mode", choices=("replace", "append"), help="override the mode")
    datasets = command("datasets", "list the catalog")
    datasets.add_argument("--json", action="store_true", help="machine-readable output")
    sql = command("sql", "run one SELECT through the same engine as the server")
    sql.add_argument("query", metavar="SQL")
    sql.add_argument("--format", choices=FORMATS, default="table")
    sql.add_argument(
        "--max-rows", type=int, help="rows in json/table output (default: server.max_rows)"
    )
    sql.add_argument(
        "--as-of", type=int, metavar="SEQ", help="see every dataset as it was after event SEQ"
    )
    log = command("log", "show the event log")
    log.add_argument("--after", type=int, default=0, metavar="SEQ", help="events after this seq")
    log.add_argument("--limit", type=int, default=None, metavar="N")
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log_sub = log.add_subparsers(dest="log_command", metavar="export")
    export = log_sub.add_parser("export", parents=[common], help="write the log as JSON Lines")
    export.add_argument("file", type=Path, metavar="FILE", help="output file (- for stdout)")
    replay = command("replay", "rebuild the catalog projection from the log")
    replay.add_argument(
        "--from",
        dest="from_file",
        type=Path,
        metavar="FILE",
        help="a `log export` file, into an empty state directory",
    )
    history = command("history", "every version of a dataset: when, why, rows, sources, schema")
    history.add_argument("dataset")
    history.add_argument("--json", action="store_true", help="machine-readable output")

    def reasoned(name: str, help_: str) -> argparse.ArgumentParser:
        sub_parser = command(name, help_)
        sub_parser.add_argument("dataset")
        sub_parser.add_argument(
            "--reason", required=True, help="why: kept in the log with the event"
        )
        return sub_parser

    reasoned("drop", "take a dataset out of the catalog (its history stays, for time travel)")
    rollback = reasoned("rollback", "make an earlier version current again, as a new version")
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION")
    retract = reasoned("retract", "take one part (by object key) out of an append dataset")
    retract.add_argument("--part", required=True, metavar="KEY")
    widen = reasoned("widen", "rewrite a dataset's parts with one column widened")
    widen.add_argument("column")
    widen.add_argument("type", metavar="TYPE")
    command("verify", "check the hash chain, seq gaps, replay digest and every object's sha256")
    status = command("status", "the running daemon's health and backlog, for a person")
    status.add_argument("--json", action="store_true", help="the daemon's /status answer")
    status.add_argument("--url", help="the daemon's address (default: from server.host/port)")
    gc = command("gc", "expire versions by retention, remove objects no kept version reads")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument(
        "--grace-s", type=float, default=None, help="keep anything younger (default 900)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lakehoused` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None))
        return COMMANDS[args.command](config, args)
    except LakehousedError as e:
        print(f"lakehoused: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    """The daemon."""
    from lakehoused.daemon import run
    from lakehoused.server import install_event_loop

    logs.setup(args.log_format, config.server.log_level.upper())
    install_event_loop()
    return run(config)


def cmd_ingest(config: Config, args: argparse.Namespace) -> int:
    """Ingest each file; exit 1 if any was rejected."""
    failed = 0
    with Lakehouse(config) as lakehouse:
        for path in args.files:
            if not path.is_file():
                print(f"lakehoused: {path}: no such file", file=sys.stderr)
                failed += 1
                continue
            with ProgressBar(path.name, sys.stderr) as bar:
                outcome = lakehouse.ingest_file(
                    path, dataset=args.dataset, mode=args.mode, progress=bar.update
                )
            line = f"{events.describe(outcome.event)} (seq {outcome.seq})"
            print(line, file=sys.stdout if outcome.ok else sys.stderr)
            failed += not outcome.ok
    return 1 if failed else 0


def cmd_datasets(config: Config, args: argparse.Namespace) -> int:
    """The catalog, as a table or as JSON."""
    with Lakehouse(config, read_only=True) as lakehouse:
        datasets = lakehouse.catalog.datasets()
    if args.json:
        print(json.dumps([d.to_json() for d in datasets], indent=2, sort_keys=True))
        return 0
    rows = [
        (d.name, str(d.version), d.mode, str(d.rows), str(d.bytes), str(len(d.parts)), d.updated_at)
        for d in datasets
    ]
    _print_table(("dataset", "version", "mode", "rows", "bytes", "parts", "updated_at"), rows)
    return 0


def cmd_sql(config: Config, args: argparse.Namespace) -> int:
    """One query through the server's engine."""
    max_rows = args.max_rows or config.server.max_rows
    with Lakehouse(config, read_only=True) as lakehouse:
        if args.as_of is not None:
            specs, gone = timetravel.state_specs(lakehouse, args.as_of)
            timetravel.refuse_gone(args.query, gone)
            engine = lakehouse.new_engine(specs, args.as_of, memory_cache=False)
        else:
            engine = lakehouse.open_engine()
        try:
            pins = timetravel.pinned_names(args.query)
            if pins:
                timetravel.add_pins(engine, lakehouse, pins)
            out = sys.stdout.buffer
            if args.format == "table":
                with engine.execute(args.query) as result:
                    table = result.reader.read_all()
                shown = table.slice(0, max_rows)
                rows = [
                    tuple("" if v is None else str(v) for v in r.values())
                    for r in shown.to_pylist()
                ]
                _print_table(tuple(table.column_names), rows)
                if table.num_rows > max_rows:
                    print(f"({table.num_rows - max_rows} more rows; use --format csv for all)")
                return 0
            answer = engine.answer(args.query, args.format, max_rows)
            if isinstance(answer, Answer):
                out.write(answer.body + (b"\n" if args.format == "json" else b""))
            else:
                try:
                    for chunk in answer:
                        out.write(chunk)
                finally:
                    answer.close()
            out.flush()
        finally:
            engine.close()
    return 0


def cmd_log(config: Config, args: argparse.Namespace) -> int:
    """The event log, or its export as JSON Lines."""
    with Lakehouse(config, read_only=True) as lakehouse:
        if args.log_command == "export":
            if str(args.file) == "-":
                count = lakehouse.log.export(sys.stdout)
            else:
                with open(args.file, "w", encoding="utf-8") as fh:
                    count = lakehouse.log.export(fh)
            print(f"exported {count} events to {args.file}", file=sys.stderr)
            return 0
        found = lakehouse.log.read(after=args.after, limit=args.limit)
    for event in found:
        if args.json:
            print(json.dumps(event.to_json(), sort_keys=True, ensure_ascii=False))
        else:
            print(
                f"{event.seq:>6}  {event.at}  {event.type:<20} {event.dataset or '-':<20} "
                f"{events.describe(event)}"
            )
    return 0


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    """Rebuild the projection (from the log, or from an export into an empty state)."""
    with Lakehouse(config) as lakehouse:
        if args.from_file:
            with open(args.from_file, encoding="utf-8") as fh:
                count = operations.restore(lakehouse, fh)
            print(f"restored {count} events from {args.from_file}")
        digest = operations.replay(lakehouse)
        print(f"replayed {lakehouse.log.last_seq} events; projection digest {digest}")
    return 0


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    """Exit 1 on any fault."""
    with Lakehouse(config, read_only=True) as lakehouse:
        problems = operations.verify(lakehouse)
        seq, objects = lakehouse.log.last_seq, len(lakehouse.catalog.referenced_objects())
    for problem in problems:
        print(f"FAULT: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {seq} events chained without gaps, projection = replay, {objects} objects intact")
    return 0


def cmd_gc(config: Config, args: argparse.Namespace) -> int:
    """Remove unreferenced objects and stale temp files."""
    kwargs = {} if args.grace_s is None else {"grace_s": args.grace_s}
    with Lakehouse(config) as lakehouse:
        report = operations.gc(lakehouse, dry_run=args.dry_run, **kwargs)
    verb = "would remove" if args.dry_run else "removed"
    for expiry in report.expired:
        listed = ", ".join(map(str, expiry.versions))
        print(
            f"{'would expire' if args.dry_run else 'expired'} {expiry.dataset} versions {listed} ({expiry.reason})"
        )
    for key in report.objects:
        print(f"{verb} {key}")
    for name in report.workspaces:
        print(f"{verb} stale staging workspace {name}")
    if report.skipped_in_flight:
        print(f"kept {report.skipped_in_flight} unreferenced objects: an ingest is in flight")
    print(f"{verb} {len(report.objects)} objects and {len(report.workspaces)} stale workspaces")
    return 0


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    """Ask the daemon; exit 1 when it is broken (or unreachable)."""
    from lakehoused import status

    url = (args.url or status.daemon_url(config.server)).rstrip("/")
    health, body = status.fetch(url, config.server.token)
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(status.render(url, health, body))
    return 1 if health.get("status") == "broken" else 0


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def cmd_history(config: Config, args: argparse.Namespace) -> int:
    """Every version of one dataset."""
    with Lakehouse(config, read_only=True) as lakehouse:
        entries = lakehouse.catalog.history(args.dataset)
    if not entries:
        raise UnknownDataset(f"no dataset named {args.dataset!r}; `lakehoused datasets` lists them")
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2, sort_keys=True))
        return 0
    rows = []
    for entry in entries:
        v = entry.version
        sources = ", ".join(s["name"] or s["uri"] or "?" for s in entry.to_json()["sources_added"])
        diff = entry.schema_diff
        changes = [f"+{c}" for c in diff["added"]] + [f"-{c}" for c in diff["removed"]]
        changes += [f"{r['name']}:{r['from']}->{r['to']}" for r in diff["retyped"]]
        rows.append(
            (
                str(v.version) + (" (expired)" if v.expired else ""),
                v.at,
                v.event,
                str(v.rows),
                str(v.bytes),
                str(v.parts),
                sources or "-",
                " ".join(changes) if v.version > 1 else "",
                v.reason or "",
            )
        )
    header = ("version", "at", "event", "rows", "bytes", "parts", "added", "schema", "reason")
    _print_table(header, rows)
    return 0


def _done(event: StoredEvent) -> int:
    print(f"{events.describe(event)} (seq {event.seq})")
    return 0


def cmd_drop(config: Config, args: argparse.Namespace) -> int:
    """Drop a dataset."""
    with Lakehouse(config) as lakehouse:
        return _done(lifecycle.drop(lakehouse, args.dataset, args.reason))


def cmd_rollback(config: Config, args: argparse.Namespace) -> int:
    """Roll a dataset back to an earlier version."""
    with Lakehouse(config) as lakehouse:
        return _done(lifecycle.rollback(lakehouse, args.dataset, args.to, args.reason))


def cmd_retract(config: Config, args: argparse.Namespace) -> int:
    """Take a part out of an append dataset."""
    with Lakehouse(config) as lakehouse:
        return _done(lifecycle.retract(lakehouse, args.dataset, args.part, args.reason))


def cmd_widen(config: Config, args: argparse.Namespace) -> int:
    """Widen one column of a dataset."""
    with Lakehouse(config) as lakehouse:
        return _done(lifecycle.widen(lakehouse, args.dataset, args.column, args.type, args.reason))


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "ingest": cmd_ingest,
    "datasets": cmd_datasets,
    "sql": cmd_sql,
    "log": cmd_log,
    "replay": cmd_replay,
    "verify": cmd_verify,
    "gc": cmd_gc,
    "history": cmd_history,
    "drop": cmd_drop,
    "rollback": cmd_rollback,
    "retract": cmd_retract,
    "widen": cmd_widen,
    "status": cmd_status,
}
