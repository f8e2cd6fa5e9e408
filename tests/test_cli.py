"""The `lakehoused` command, as a user runs it (DESIGN §8)."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from lakehoused.cli import main


@pytest.fixture
def cli(make_config, capsys):
    """Run `lakehoused --config <tmp config> ARGS…`; return (exit code, stdout, stderr)."""
    config = make_config()

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--config", str(config)])
        out, err = capsys.readouterr()
        return code, out, err

    run.config = config
    return run


def drop(cli, relpath: str, text: str):
    path = cli.config.parent / "src" / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_ingest_the_workers_file_and_query_it(cli, workers_500k):
    code, out, _ = cli("ingest", str(workers_500k))
    assert code == 0
    assert "registered" in out and "500000 rows" in out
    code, out, _ = cli(
        "sql",
        "SELECT count(*) AS n, count(*) FILTER (bonus = 'N/A') AS na, any_value(typeof(bonus)) AS t FROM workers",
        "--format",
        "json",
    )
    answer = json.loads(out)
    n, na, type_ = answer["rows"][0]
    assert (n, type_) == (500_000, "VARCHAR")
    with open(workers_500k, newline="", encoding="utf-8") as fh:
        assert na == sum(1 for row in csv.DictReader(fh) if row["bonus"] == "N/A") > 0


def test_ingest_exits_1_when_a_file_is_rejected(cli):
    good, bad = drop(cli, "good.csv", "a\n1\n"), drop(cli, "bad.csv", 'a,b\n"open\n')
    code, out, err = cli("ingest", str(good), str(bad))
    assert code == 1
    assert "registered" in out
    assert "rejected" in err and "never closed" in err


def test_ingest_dataset_and_mode_options(cli):
    cli("ingest", str(drop(cli, "x.csv", "a\n1\n")), "--dataset", "Sales", "--mode", "append")
    cli("ingest", str(drop(cli, "y.csv", "a\n2\n")), "--dataset", "sales", "--mode", "append")
    _, out, _ = cli("datasets", "--json")
    (sales,) = json.loads(out)
    assert (sales["name"], sales["mode"], sales["rows"], sales["version"]) == (
        "sales",
        "append",
        2,
        2,
    )


def test_replay_after_deleting_the_projection_gives_the_same_catalog(cli):
    cli("ingest", str(drop(cli, "w.csv", "id,n\n1,2\n")))
    cli("ingest", str(drop(cli, "w2/w.csv", "id,n\n3,4\n")), "--dataset", "w", "--mode", "append")
    cli("ingest", str(drop(cli, "s/a.csv", "x\n1\n")), "--dataset", "s", "--mode", "append")
    cli("ingest", str(drop(cli, "bad.csv", "a,b\n1\n")))
    _, before, _ = cli("datasets", "--json")
    db = cli.config.parent / "var" / "state" / "lakehoused.db"
    raw = sqlite3.connect(db)
    for (table,) in raw.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'catalog_%' AND type = 'table'"
    ).fetchall():
        raw.execute(f"DROP TABLE {table}")
    raw.commit()
    raw.close()
    code, out, _ = cli("replay")
    assert code == 0 and "projection digest" in out
    assert cli("datasets", "--json")[1] == before
    assert cli("verify")[0] == 0


def test_verify_fails_after_tampering(cli):
    cli("ingest", str(drop(cli, "w.csv", "id\n1\n")))
    code, out, _ = cli("verify")
    assert code == 0 and out.startswith("ok:")
    objects = cli.config.parent / "var" / "objects" / "datasets" / "w"
    (obj,) = objects.iterdir()
    data = obj.read_bytes()
    obj.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, _, err = cli("verify")
    assert code == 1 and "FAULT" in err and "sha256" in err
    obj.write_bytes(data)
    assert cli("verify")[0] == 0
    raw = sqlite3.connect(cli.config.parent / "var" / "state" / "lakehoused.db")
    raw.execute("DROP TRIGGER events_no_update")
    raw.execute("UPDATE events SET dataset = 'other' WHERE seq = 1")
    raw.commit()
    raw.close()
    code, _, err = cli("verify")
    assert code == 1 and "seq 1" in err


def test_log_export_and_replay_from_rebuild_a_state_directory(cli, make_config, tmp_path, capsys):
    cli("ingest", str(drop(cli, "w.csv", "id\n1\n")))
    cli("ingest", str(drop(cli, "w.csv", "id\n2\n")))
    export = tmp_path / "log.jsonl"
    assert cli("log", "export", str(export))[0] == 0
    assert len(export.read_text().splitlines()) == 2
    _, before, _ = cli("datasets", "--json")
    # A new state directory beside the same object store.
    fresh = tmp_path / "fresh.toml"
    fresh.write_text(cli.config.read_text().replace('"var/state"', '"var/state2"'))
    assert main(["replay", "--from", str(export), "--config", str(fresh)]) == 0
    assert main(["datasets", "--json", "--config", str(fresh)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(before)
    assert main(["verify", "--config", str(fresh)]) == 0
    # Never over an existing log.
    assert main(["replay", "--from", str(export), "--config", str(fresh)]) == 1


def test_log_lists_every_decision(cli):
    cli("ingest", str(drop(cli, "w.csv", "id\n1\n")))
    cli("ingest", str(drop(cli, "w.csv", "id\n1\n")))
    cli("ingest", str(drop(cli, "bad.csv", "")))
    _, out, _ = cli("log", "--json")
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["dataset.registered", "ingest.duplicate", "ingest.rejected"]
    _, out, _ = cli("log", "--after", "2")
    assert "ingest.rejected" in out and "empty" in out


def test_sql_formats_and_the_sandbox(cli):
    cli("ingest", str(drop(cli, "w.csv", 'id,note\n1,"a, ""b"""\n2,\n')))
    _, out, _ = cli("sql", "SELECT * FROM w ORDER BY id", "--format", "csv")
    assert list(csv.reader(io.StringIO(out))) == [["id", "note"], ["1", 'a, "b"'], ["2", ""]]
    _, out, _ = cli("sql", "SELECT * FROM w ORDER BY id", "--format", "ndjson")
    assert [json.loads(x) for x in out.splitlines()] == [
        {"id": 1, "note": 'a, "b"'},
        {"id": 2, "note": None},
    ]
    _, out, _ = cli("sql", "SELECT id FROM w", "--format", "json", "--max-rows", "1")
    assert json.loads(out)["truncated"] is True
    _, out, _ = cli("sql", "SELECT id, note FROM w ORDER BY id")
    assert out.splitlines()[0].split() == ["id", "note"]
    code, _, err = cli("sql", "COPY w TO '/tmp/x.csv'")
    assert code == 1 and "only one SELECT" in err
    code, _, err = cli("sql", "SELECT * FROM read_csv('/etc/passwd')")
    assert code == 1


def test_gc_dry_run_lists_and_keeps(cli):
    cli("ingest", str(drop(cli, "w.csv", "id\n1\n")))
    orphan = cli.config.parent / "var" / "objects" / "datasets" / "w" / ("f" * 64 + ".parquet")
    orphan.write_bytes(b"x")
    code, out, _ = cli("gc", "--dry-run", "--grace-s", "0")
    assert code == 0 and "would remove datasets/w/" in out
    assert orphan.exists()
    cli("gc", "--grace-s", "0")
    assert not orphan.exists()


def test_bad_config_names_the_key(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_text("[server]\nport = 70000\n")
    assert main(["datasets", "--config", str(config)]) == 1
    assert "server.port" in capsys.readouterr().err


def test_entry_point_and_environment_variable(cli, tmp_path):
    env = {**os.environ, "LAKEHOUSED_CONFIG": str(cli.config)}

    def lakehoused(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "lakehoused", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)

    # Nothing ingested yet: a read-only command says so and creates nothing.
    out = lakehoused("datasets", "--json")
    assert out.returncode == 1 and "check state.path" in out.stderr
    assert not (cli.config.parent / "var" / "state" / "lakehoused.db").exists()
    assert lakehoused("replay").returncode == 0
    out = lakehoused("datasets", "--json")
    assert out.returncode == 0
    assert json.loads(out.stdout) == []
