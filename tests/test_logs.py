"""Log lines a person reads in journald, JSON for machines, and never a secret (DESIGN §7)."""

from __future__ import annotations

import io
import json
import logging
import os

from lakehoused import logs
from tests.daemon_process import dataset_rows, rows, staged


def test_one_json_line_per_event_with_dataset_file_and_seq(make_daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSED_TEST_TOKEN", "s3cr3t-t0ken-value")
    daemon = make_daemon(
        args=("--log-format", "json"), server='token_env = "LAKEHOUSED_TEST_TOKEN"'
    )
    os.rename(staged(tmp_path, "a.csv", rows(2)), daemon.inbox / "w.csv")
    daemon.wait_for((daemon.inbox / ".done" / "w.csv").exists, what="w registered")
    os.rename(staged(tmp_path, "b.csv", rows(2)), daemon.inbox / "w.csv")  # the same bytes
    os.rename(staged(tmp_path, "c.csv", "a,b\n1,2,3\n"), daemon.inbox / "bad.csv")
    daemon.wait_for((daemon.inbox / ".rejected" / "bad.csv").exists, what="bad rejected")
    daemon.wait_for(lambda: not (daemon.inbox / "w.csv").exists(), what="the duplicate")
    assert daemon.stop() == 0

    lines = [json.loads(line) for line in daemon.output if line.startswith("{")]
    by_event = {}
    for line in lines:
        assert {"at", "level", "message"} <= line.keys()
        if "event" in line:
            by_event.setdefault(line["event"], []).append(line)
    (registered,) = by_event["dataset.registered"]
    assert (registered["dataset"], registered["file"], registered["seq"]) == ("w", "w.csv", 1)
    assert registered["level"] == "info" and "version 1" in registered["message"]
    (duplicate,) = by_event["ingest.duplicate"]
    assert duplicate["dataset"] == "w" and duplicate["file"] == "w.csv"
    (rejected,) = by_event["ingest.rejected"]
    assert rejected["level"] == "warning" and rejected["file"] == "bad.csv"
    assert "expected 2 fields, got 3" in rejected["message"]
    messages = " ".join(line["message"] for line in lines)
    for moment in ("starting", "ready", "stopping", "stopped"):
        assert moment in messages
    assert "s3cr3t-t0ken-value" not in "".join(daemon.output)


def test_text_lines_carry_their_context(make_daemon, tmp_path):
    daemon = make_daemon()
    os.rename(staged(tmp_path, "a.csv", rows(2)), daemon.inbox / "w.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 2, what="w")
    daemon.wait_for(
        lambda: any("registered w.csv" in line for line in daemon.output), what="its line"
    )
    (line,) = [line for line in daemon.output if "registered w.csv" in line]
    assert " INFO " in line and "[dataset=w file=w.csv seq=1 event=dataset.registered]" in line


def test_under_journald_lines_start_with_their_syslog_priority(tmp_path, monkeypatch):
    stream = open(tmp_path / "journal", "w")  # noqa: SIM115 - closed below
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.under_journald(stream)
    monkeypatch.setenv("JOURNAL_STREAM", "0:0")
    assert not logs.under_journald(stream)
    stream.close()

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.TextFormatter(journald=True))
    logger = logging.getLogger("lakehoused.test.journal")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.warning("rejected x.csv: line 2", extra={"dataset": "x", "seq": 3})
    logger.critical("the daemon is broken")
    logger.info("registered")
    assert out.getvalue().splitlines() == [
        "<4>rejected x.csv: line 2 [dataset=x seq=3]",
        "<2>the daemon is broken",
        "<6>registered",
    ]


async def test_a_slow_query_is_logged_with_its_time_and_sql(aiohttp_client, make_config, caplog):
    from lakehoused.config import load_config
    from lakehoused.daemon import build_app

    config = load_config(make_config(server="slow_query_ms = 1"))
    client = await aiohttp_client(build_app(config))
    slow = "SELECT count(*) FROM range(20000000) t(i) WHERE i % 7 = 3"
    with caplog.at_level(logging.WARNING):
        response = await client.post("/sql", json={"sql": slow})
        assert response.status == 200
        quick = await client.post("/sql", json={"sql": "SELECT 1"})
        assert quick.status == 200
    lines = [r.getMessage() for r in caplog.records if "slow query" in r.getMessage()]
    assert len(lines) >= 1 and slow in lines[0]
    assert "over server.slow_query_ms = 1" in lines[0]
