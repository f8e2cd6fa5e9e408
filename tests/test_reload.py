"""SIGHUP: safe settings change in the running daemon; the others wait for a restart."""

from __future__ import annotations

import os
import signal

from lakehoused.config import load_config
from lakehoused.reload import plan
from tests.daemon_process import staged

NA_FILE = "id,amount\n1,N/A\n2,5\n"


def test_sighup_applies_safe_settings_and_refuses_a_broken_config(make_daemon, tmp_path):
    daemon = make_daemon()
    os.rename(staged(tmp_path, "before.csv", NA_FILE), daemon.inbox / "before.csv")
    daemon.wait_for(lambda: daemon.get("/health")["catalog_seq"] == 1, what="before.csv")
    assert daemon.get("/datasets/before")["schema"][1]["type"] == "VARCHAR"  # N/A is a value

    config = daemon.config.read_text()
    edited = config.replace("port = 0", 'port = 0\nmax_rows = 1\nlog_level = "warning"')
    edited = edited.replace("settle_ms = 100", "settle_ms = 150")  # not reloadable
    edited += '\n[datasets.after]\nnull_values = ["N/A"]\n'
    daemon.config.write_text(edited)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(
        lambda: "inbox.settle_ms: 100 -> 150 needs a restart" in "".join(daemon.output),
        what="the reload's log lines",
    )
    log = "".join(daemon.output)
    assert "SIGHUP: applied server.max_rows: 10000 -> 1" in log
    assert 'SIGHUP: applied datasets.after: (default) -> {null_values = ["N/A"]}' in log

    # The next file of the dataset reads N/A as NULL; a query is cut at the new max_rows.
    os.rename(staged(tmp_path, "after.csv", NA_FILE), daemon.inbox / "after.csv")
    daemon.wait_for(lambda: daemon.get("/health")["catalog_seq"] == 2, what="after.csv")
    assert daemon.get("/datasets/after")["schema"][1]["type"] == "BIGINT"
    body = daemon.get("/sql", q="SELECT amount FROM after ORDER BY id")
    assert (body["rows"], body["truncated"]) == ([[None]], True)
    # log_level = "warning": the registration's info line is no longer written.
    assert "registered after.csv" not in "".join(daemon.output)
    assert "registered before.csv" in "".join(daemon.output)

    # A config that does not validate is refused whole: the running settings stay.
    daemon.config.write_text(edited.replace("max_rows = 1", "max_rows = 0"))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(
        lambda: "server.max_rows: must be an integer >= 1, got 0" in "".join(daemon.output),
        what="the refusal",
    )
    assert "keeps running with its settings as they were" in "".join(daemon.output)
    assert daemon.get("/sql", q="SELECT amount FROM after ORDER BY id")["rows"] == [[None]]
    assert daemon.get("/health")["status"] == "ok"


def test_plan_sorts_changes_and_hides_the_token(make_config):
    path = make_config(server='token_env = "T"')
    running = load_config(path, {"T": "old-secret"})
    loaded = load_config(path, {"T": "new-secret"})
    change = plan(running, loaded)
    assert [c.describe() for c in change.needs_restart] == [
        "server.token_env (the token's value) changed"
    ]
    assert change.config.server.token == "old-secret"  # kept until a restart
    assert "secret" not in repr(change)
    same = plan(running, running)
    assert (same.applied, same.needs_restart, same.config) == ([], [], running)


def test_retention_is_applied(make_config):
    running = load_config(make_config())
    loaded = load_config(make_config(datasets="[retention]\nkeep_versions = 3\n"))
    change = plan(running, loaded)
    assert [c.describe() for c in change.applied] == ["retention.keep_versions: (default) -> 3"]
    assert change.config.retention.keep_versions == 3 and change.needs_restart == []
