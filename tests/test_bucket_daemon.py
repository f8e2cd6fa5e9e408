"""The real `lakehoused run` watching a bucket prefix on a real S3-protocol server (nanio),
driven the way a user of a bucket drives it: uploads with the minio client, answers over
HTTP (DESIGN §2, §5, §7)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lakehoused.daemon.scheduler import BACKOFF_S
from tests.daemon_process import Daemon, dataset_rows, rows
from tests.s3server import ACCESS_KEY, KEYS_ENV, SECRET_KEY, Nanio, list_keys

PREFIX = "drop/"
LAKE = "lake/"


def write_config(tmp_path: Path, nanio: Nanio, inbox: str, store: str, extra: str = "") -> Path:
    """A config.toml with a bucket inbox and a bucket store on `nanio`."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[inbox]\nurl = "s3://{inbox}/{PREFIX}"\nrescan_s = 0.2\n\n'
        f'[store]\nurl = "s3://{store}/{LAKE}"\n\n'
        '[state]\npath = "var/state"\n\n'
        '[server]\nhost = "127.0.0.1"\nport = 0\n\n' + nanio.toml() + extra,
        encoding="utf-8",
    )
    return path


def upload(nanio: Nanio, bucket: str, name: str, data: bytes | str) -> None:
    """Upload under the watched prefix, as any S3 client would (multipart above 5 MiB)."""
    body = data.encode() if isinstance(data, str) else data
    nanio.client().put_object(bucket, PREFIX + name, io.BytesIO(body), len(body), part_size=5 << 20)


def read(nanio: Nanio, bucket: str, key: str) -> bytes:
    response = nanio.client().get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def registered(daemon: Daemon, dataset: str | None = None) -> list[dict]:
    return [
        e
        for e in daemon.events()
        if e["type"] == "dataset.registered" and dataset in (None, e["dataset"])
    ]


def lakehoused(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lakehoused", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **KEYS_ENV},
        timeout=60,
    )


@pytest.fixture
def buckets(nanio: Nanio) -> tuple[str, str]:
    """A fresh inbox bucket and a fresh store bucket."""
    return nanio.new_bucket(), nanio.new_bucket()


def test_a_bucket_inbox_and_store_end_to_end(nanio, buckets, tmp_path):
    inbox, store = buckets
    config = write_config(tmp_path, nanio, inbox, store)
    daemon = Daemon(config, KEYS_ENV)
    try:
        big = rows(230_000)  # ~6 MB: uploaded in parts, so its ETag is no content hash
        assert len(big) > 5 << 20
        upload(nanio, inbox, "workers.csv", rows(100))
        upload(nanio, inbox, "big.csv", big)
        upload(nanio, inbox, "sales/2026-11-01.csv", rows(3))
        upload(nanio, inbox, "sales/2026-11-02.csv", rows(4, 3))
        upload(nanio, inbox, "bad.csv", "a,b\n1,2\n3,4,5\n")
        upload(nanio, inbox, "notes.txt.part", "ignored: still being written")

        daemon.wait_for(lambda: dataset_rows(daemon, "workers") == 100, what="workers")
        daemon.wait_for(lambda: dataset_rows(daemon, "big") == 230_000, what="big")
        daemon.wait_for(lambda: dataset_rows(daemon, "sales") == 7, what="sales")
        rejected = f"{PREFIX}.rejected/bad.csv.error.json"
        daemon.wait_for(lambda: rejected in list_keys(nanio.client(), inbox), what="bad")
        assert "line 3" in json.loads(read(nanio, inbox, rejected))["reason"]
        daemon.wait_for(
            lambda: len(list_keys(nanio.client(), inbox, PREFIX + ".done/")) == 4, what="archived"
        )
        assert list_keys(nanio.client(), inbox, PREFIX) == [
            f"{PREFIX}.done/big.csv",
            f"{PREFIX}.done/sales/2026-11-01.csv",
            f"{PREFIX}.done/sales/2026-11-02.csv",
            f"{PREFIX}.done/workers.csv",
            f"{PREFIX}.rejected/bad.csv",
            f"{PREFIX}.rejected/bad.csv.error.json",
            f"{PREFIX}notes.txt.part",
        ]
        assert read(nanio, inbox, f"{PREFIX}.done/big.csv") == big.encode()

        # Each Parquet object sits in the store bucket under its content address.
        events = registered(daemon)
        assert len(events) == 4
        objects = sorted(LAKE + e["data"]["object"]["key"] for e in events)
        assert list_keys(nanio.client(), store) == objects
        assert all(e["data"]["source"]["uri"].startswith(f"s3://{inbox}/{PREFIX}") for e in events)
        big_event = next(e for e in events if e["dataset"] == "big")
        assert big_event["data"]["source"]["bytes"] == len(big)

        # The same bytes uploaded again: exactly once, a duplicate.
        upload(nanio, inbox, "workers.csv", rows(100))
        daemon.wait_for(
            lambda: any(e["type"] == "ingest.duplicate" for e in daemon.events()), what="dup"
        )
        assert len(registered(daemon, "workers")) == 1
        status = daemon.get("/status")
        health = daemon.get("/health")
        all_events = daemon.events()
        assert daemon.stop() == 0
    finally:
        daemon.stop()

    verify = lakehoused(config, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # No key of the credentials anywhere a person or a program reads.
    error_docs = read(nanio, inbox, rejected).decode()
    for text in (
        config.read_text(),
        "".join(daemon.output),
        json.dumps(all_events),
        json.dumps(status),
        json.dumps(health),
        error_docs,
        verify.stdout + verify.stderr,
    ):
        assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_the_endpoint_going_away_mid_run_loses_and_doubles_nothing(tmp_path):
    # A server of its own, stopped and started again on the same port and data.
    nanio = Nanio(tmp_path / "nanio").start()
    try:
        inbox, store = nanio.new_bucket(), nanio.new_bucket()
        config = write_config(tmp_path, nanio, inbox, store)
        # The pause holds x.csv between its registration and its archive: the server goes
        # away in that second, so the archive fails and must be retried.
        daemon = Daemon(config, {**KEYS_ENV, "LAKEHOUSED_FAULT": "pause_archive:x.csv"})
        upload(nanio, inbox, "x.csv", rows(10))
        daemon.wait_for(lambda: registered(daemon, "x"), what="x registered")
        nanio.stop()
        health = daemon.wait_for(
            lambda: (h := daemon.get("/health"))["status"] == "degraded" and h, what="degraded"
        )
        problem = health["problems"][0]
        assert problem["part"] in ("inbox", "store") and problem["since"]
        assert "127.0.0.1" in problem["reason"]
        status = daemon.get("/status")
        assert status["health"] == "degraded" and status["problems"]
        time.sleep(0.5)
        nanio.start()
        upload(nanio, inbox, "y.csv", rows(5))
        daemon.wait_for(lambda: dataset_rows(daemon, "y") == 5, timeout=30, what="y")
        daemon.wait_for(
            lambda: f"{PREFIX}.done/x.csv" in list_keys(nanio.client(), inbox),
            timeout=10 + BACKOFF_S[2],
            what="x archived",
        )
        daemon.wait_for(lambda: daemon.get("/health")["status"] == "ok", what="recovered")
        assert dataset_rows(daemon, "x") == 10
        assert len(registered(daemon, "x")) == 1 and len(registered(daemon, "y")) == 1
        assert list_keys(nanio.client(), inbox, PREFIX) == [
            f"{PREFIX}.done/x.csv",
            f"{PREFIX}.done/y.csv",
        ]
        assert daemon.stop() == 0
    finally:
        nanio.stop()


def test_sigkill_mid_ingest_from_a_bucket_loses_and_doubles_nothing(nanio, buckets, tmp_path):
    inbox, store = buckets
    config = write_config(tmp_path, nanio, inbox, store)
    daemon = Daemon(config, {**KEYS_ENV, "LAKEHOUSED_FAULT": "crash_after_append:victim"})
    try:
        upload(nanio, inbox, "victim.csv", rows(20))
        daemon.process.wait(timeout=30)
        assert daemon.process.returncode == -signal.SIGKILL
    finally:
        daemon.stop()
    assert list_keys(nanio.client(), inbox, PREFIX) == [f"{PREFIX}victim.csv"]

    again = Daemon(config, KEYS_ENV)
    try:
        again.wait_for(
            lambda: f"{PREFIX}.done/victim.csv" in list_keys(nanio.client(), inbox),
            what="victim archived",
        )
        assert dataset_rows(again, "victim") == 20
        assert [e["type"] for e in again.events()] == ["dataset.registered", "ingest.duplicate"]
        assert again.stop() == 0
    finally:
        again.stop()
    verify = lakehoused(config, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert len(list_keys(nanio.client(), store)) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("secret", "lakehoused: s3.secret_key_env: the server at 127.0.0.1:"),
        ("access", "lakehoused: s3.access_key_env: the server at 127.0.0.1:"),
        ("bucket", "lakehoused: store.url: bucket 'no-such-bucket' does not exist at"),
        ("endpoint", "lakehoused: s3.endpoint: cannot reach 127.0.0.1:"),
    ],
)
def test_a_misconfigured_bucket_fails_at_start_in_one_line(
    nanio, buckets, tmp_path, case, expected
):
    inbox, store = buckets
    if case == "bucket":
        store = "no-such-bucket"
    config = write_config(tmp_path, nanio, inbox, store)
    env = dict(KEYS_ENV)
    if case == "secret":
        env[next(k for k in env if "SECRET" in k)] = "not-the-secret"
    elif case == "access":
        env[next(k for k in env if "ACCESS" in k)] = "not-a-known-key"
    elif case == "endpoint":
        text = config.read_text().replace(nanio.endpoint, "127.0.0.1:1")
        config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "lakehoused", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert ACCESS_KEY not in result.stderr and SECRET_KEY not in result.stderr
    assert "not-the-secret" not in result.stderr
