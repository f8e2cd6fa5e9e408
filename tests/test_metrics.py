"""`GET /metrics` of the real daemon, parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lakehoused.metrics import json_row_count
from tests.daemon_process import dataset_rows, rows, staged


def scrape(daemon, token: str | None = None) -> dict[tuple, float]:
    """Every sample as {(name, (label, value), ...): value}."""
    request = urllib.request.Request(daemon.url + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, *sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, *sorted(labels.items())), 0.0)


def get_csv(daemon, query: str) -> str:
    url = daemon.url + "/sql?" + urllib.parse.urlencode({"q": query, "format": "csv"})
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_counters_move_with_ingests_and_queries(make_daemon, tmp_path):
    daemon = make_daemon()
    before = scrape(daemon)
    assert value(before, "lakehoused_files_ingested_total", dataset="w") == 0
    assert value(before, "lakehoused_health", state="ok") == 1

    source = staged(tmp_path, "w.csv", rows(40))
    size = source.stat().st_size
    shutil.copy(source, tmp_path / "again.csv")
    os.rename(source, daemon.inbox / "w.csv")
    daemon.wait_for(lambda: dataset_rows(daemon, "w") == 40, what="w")
    os.rename(staged(tmp_path, "bad.csv", "a,b\n1,2,3\n"), daemon.inbox / "bad.csv")
    os.rename(tmp_path / "again.csv", daemon.inbox / "w.csv")  # the same bytes: a duplicate
    daemon.wait_for(
        lambda: {e["type"] for e in daemon.events()} >= {"ingest.rejected", "ingest.duplicate"},
        what="the rejection and the duplicate",
    )
    daemon.wait_for(lambda: daemon.get("/status")["files_pending"] == 0, what="idle")
    idle = scrape(daemon)  # the readiness polls above were queries too

    assert len(daemon.sql("SELECT * FROM w WHERE id < 7")) == 7
    assert len(daemon.sql("SELECT * FROM w")) == 40
    assert len(get_csv(daemon, "SELECT * FROM w").splitlines()) == 41  # header + 40 rows
    with pytest.raises(urllib.error.HTTPError) as bad:
        daemon.sql("SELECT nope FROM w")
    assert bad.value.code == 400

    after = scrape(daemon)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(idle, name, **labels)

    assert value(after, "lakehoused_files_ingested_total", dataset="w") == 1
    assert value(after, "lakehoused_ingested_bytes_total", dataset="w") == size
    assert value(after, "lakehoused_ingested_rows_total", dataset="w") == 40
    assert value(after, "lakehoused_files_rejected_total", dataset="bad") == 1
    assert value(after, "lakehoused_files_duplicate_total", dataset="w") == 1
    assert value(after, "lakehoused_events_total", type="dataset.registered") == 1
    assert value(after, "lakehoused_ingest_duration_seconds_count") == 3
    assert value(after, "lakehoused_ingest_duration_seconds_sum") > 0
    assert moved("lakehoused_queries_total", code="200") == 3
    assert moved("lakehoused_queries_total", code="400") == 1
    assert moved("lakehoused_query_duration_seconds_count") == 4
    assert moved("lakehoused_query_rows_returned_total") == 7 + 40 + 40  # JSON and streamed
    assert value(after, "lakehoused_catalog_seq") == daemon.get("/health")["catalog_seq"] == 3
    assert value(after, "lakehoused_files_pending") == 0
    assert value(after, "lakehoused_converter_restarts_total") == 0

    daemon.sql("SELECT 1")
    again = scrape(daemon)
    assert (
        value(again, "lakehoused_query_rows_returned_total")
        == value(after, "lakehoused_query_rows_returned_total") + 1
    )
    assert (
        value(again, "lakehoused_queries_total", code="200")
        == value(after, "lakehoused_queries_total", code="200") + 1
    )


def test_a_store_failure_in_metrics_and_status_behind_the_token(make_daemon, tmp_path):
    daemon = make_daemon(env={"LH_TOKEN": "s3cret"}, server='token_env = "LH_TOKEN"')
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(daemon)
    assert refused.value.code == 401
    store = daemon.config.parent / "var" / "objects"
    shutil.rmtree(store)
    store.write_text("the store's disk is gone")
    os.rename(staged(tmp_path, "w.csv", rows(4)), daemon.inbox / "w.csv")

    def failed_once() -> dict | None:
        samples = scrape(daemon, "s3cret")
        return samples if value(samples, "lakehoused_store_errors_total") >= 1 else None

    samples = daemon.wait_for(failed_once, what="a store error")
    assert value(samples, "lakehoused_ingest_retries_total", reason="store_unavailable") >= 1
    assert value(samples, "lakehoused_files_pending") == 1
    assert value(samples, "lakehoused_files_pending_by_state", state="retrying") == 1
    assert value(samples, "lakehoused_oldest_pending_seconds") > 0
    assert value(samples, "lakehoused_health", state="degraded") == 1

    # `lakehoused status` says the same for a person, with the token the config names.
    port = daemon.url.rsplit(":", 1)[1]
    command = [sys.executable, "-m", "lakehoused", "status", "--config", str(daemon.config)]
    shown = subprocess.run(
        [*command, "--url", f"http://127.0.0.1:{port}"],
        env={**os.environ, "LH_TOKEN": "s3cret"},
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr  # degraded still serves
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"lakehoused at http://127.0.0.1:{port}: degraded, catalog at seq 0")
    assert lines[1].startswith("backlog: 1 file pending (0 waiting, 0 queued, ")
    assert any(line.startswith("  retrying   w.csv: try ") for line in lines)
    assert any(line.startswith("problem: store: ") for line in lines)
    refused = subprocess.run(
        [*command, "--url", f"http://127.0.0.1:{port}"],
        env={**os.environ, "LH_TOKEN": "wrong"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "refused the API token" in refused.stderr and "wrong" not in refused.stderr


def test_json_row_count_reads_the_top_level_key():
    body = b'{"columns":[],"rows":[[{"row_count":99}]],"row_count":1,"truncated":false}'
    assert json_row_count(body) == 1
    assert json_row_count(b'{"error":{"code":"bad_sql"}}') == 0


def test_status_finds_the_daemon_from_its_config_and_says_when_it_cannot():
    from lakehoused.config import ServerConfig
    from lakehoused.errors import LakehousedError
    from lakehoused.status import daemon_url, fetch

    assert daemon_url(ServerConfig(host="0.0.0.0", port=8765)) == "http://127.0.0.1:8765"
    assert daemon_url(ServerConfig(host="::", port=80, token="t")) == "http://[::1]:80"
    assert daemon_url(ServerConfig(host="localhost", port=1)) == "http://localhost:1"
    with pytest.raises(LakehousedError, match="--url"):
        daemon_url(ServerConfig(port=0))
    with pytest.raises(
        LakehousedError, match=re.escape("cannot reach the daemon at http://127.0.0.1:9:")
    ):
        fetch("http://127.0.0.1:9", None, timeout_s=2)
