"""The bucket edge's parts on a real S3-protocol server (nanio): the read-through object cache
and the query sandbox over it, the prefix listing, the notification hints."""

from __future__ import annotations

import hashlib
import http.server
import io
import socketserver
import threading
import time
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import urllib3

from lakehoused.config import load_config
from lakehoused.errors import QueryError, StoreError
from lakehoused.inbox.bucket import BucketInbox
from lakehoused.inbox.listing import PrefixWatcher
from lakehoused.inbox.listing import _usable as usable
from lakehoused.lakehouse import Lakehouse
from lakehoused.query import QueryEngine, ViewSpec
from lakehoused.s3 import Bucket
from lakehoused.schema import Column
from lakehoused.store import S3ObjectStore, object_key, object_sha256
from lakehoused.store.cache import ReadThroughCache
from tests.s3server import ACCESS_KEY, SECRET_KEY, Nanio, list_keys
from tests.test_query import attacks

# -- the read-through cache ------------------------------------------------------------------


def parquet(tmp_path: Path, values: list[int]) -> tuple[str, Path]:
    """A Parquet file of one column `n`, and its object key in dataset `w`."""
    path = tmp_path / f"v{len(values)}-{values[0]}.parquet"
    pq.write_table(pa.table({"n": values}), path)
    return object_key("w", hashlib.sha256(path.read_bytes()).hexdigest()), path


def cached(cache: ReadThroughCache) -> set[str]:
    return {p.relative_to(cache.root).as_posix() for p in cache.root.rglob("*.parquet")}


def view(cache: ReadThroughCache, engine: QueryEngine, key: str, seq: int) -> None:
    """What a catalog change does: fill the cache with the new version, swap the view."""
    cache.fill([key])
    engine.sync({"w": ViewSpec([Column("n", "BIGINT")], [cache.path(key)])}, seq)


def test_eviction_never_breaks_a_live_view(nanio, tmp_path):
    store = S3ObjectStore(nanio.location(nanio.new_bucket(), "lake/"))
    versions = [parquet(tmp_path, list(range(i, i + 100 * (i + 1)))) for i in range(3)]
    for key, path in versions:
        store.put(key, path)
    # A capacity smaller than any object: only what the view reads may stay.
    cache = ReadThroughCache(store, tmp_path / "cache", capacity=1, grace_s=0)
    engine = QueryEngine(cache.root, threads=1)
    try:
        for seq, (key, _) in enumerate(versions, 1):
            view(cache, engine, key, seq)
            assert cached(cache) == {key}
            rows = engine.execute("SELECT count(*) AS c FROM w").reader.read_all().to_pylist()
            assert rows == [{"c": 100 * seq}]
    finally:
        engine.close()


def test_a_query_on_replaced_views_keeps_its_objects_for_the_grace_period(nanio, tmp_path):
    store = S3ObjectStore(nanio.location(nanio.new_bucket(), ""))
    (old, old_path), (new, new_path) = parquet(tmp_path, [1, 2]), parquet(tmp_path, [7])
    store.put(old, old_path)
    store.put(new, new_path)
    cache = ReadThroughCache(store, tmp_path / "cache", capacity=1, grace_s=60)
    engine = QueryEngine(cache.root, threads=1)
    try:
        view(cache, engine, old, 1)
        running = engine.execute("SELECT n FROM w ORDER BY n")  # begun on the old views
        view(cache, engine, new, 2)
        assert cached(cache) == {old, new}  # over capacity, but the old one may be read
        assert running.reader.read_all().to_pylist() == [{"n": 1}, {"n": 2}]
        # A cache reopened (the daemon restarted) counts what it holds, and evicts it once
        # no view reads it.
        again = ReadThroughCache(store, tmp_path / "cache", capacity=1, grace_s=0)
        assert again.size == old_path.stat().st_size + new_path.stat().st_size
        again.fill([new])
        assert cached(again) == {new}
    finally:
        engine.close()


def test_a_download_is_checked_against_its_content_address(nanio, tmp_path):
    store = S3ObjectStore(nanio.location(nanio.new_bucket(), ""))
    key, _ = parquet(tmp_path, [1])
    _, other = parquet(tmp_path, [2, 3])
    store.put(key, other)  # wrong bytes under the key (as a tampered bucket would hold)
    cache = ReadThroughCache(store, tmp_path / "cache", capacity=1 << 30)
    with pytest.raises(StoreError, match="run `lakehoused verify`"):
        cache.fill([key])
    assert cached(cache) == set()
    assert list((tmp_path / "cache" / ".tmp").iterdir()) == []


def test_a_put_through_the_cache_is_queryable_without_a_download(nanio, tmp_path):
    store = S3ObjectStore(nanio.location(nanio.new_bucket(), ""))
    cache = ReadThroughCache(store, tmp_path / "cache", capacity=1 << 30)
    key, path = parquet(tmp_path, [5, 6])
    opened: list[str] = []
    original = store.open
    store.open = lambda k: opened.append(k) or original(k)  # type: ignore[method-assign]
    assert cache.writer.put(key, path) is True
    cache.fill([key])
    assert opened == []
    assert cache.path(key).read_bytes() == path.read_bytes()
    assert object_sha256(store, key) == Path(key).stem


# -- queries over bucket objects: the sandbox ------------------------------------------------


def test_the_attack_corpus_changes_nothing_against_a_bucket_store(nanio, tmp_path, write_csv):
    bucket = nanio.new_bucket()
    (tmp_path / "inbox").mkdir()
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'[store]\nurl = "s3://{bucket}/lake/"\n' + nanio.toml(), encoding="utf-8"
    )
    config = load_config(
        config_file,
        environ={"LAKEHOUSED_TEST_S3_ACCESS": ACCESS_KEY, "LAKEHOUSED_TEST_S3_SECRET": SECRET_KEY},
    )
    with Lakehouse(config) as lakehouse:
        lakehouse.ingest_file(write_csv("workers.csv", "id,name\n1,ada\n2,bob\n3,cy\n"))
        engine = lakehouse.open_engine()
        store = lakehouse.store
        keys = list(store.keys())
        before = {key: object_sha256(store, key) for key in keys}
        (key,) = keys
        s3_url = f"s3://{bucket}/lake/{key}"
        http_url = f"http://{nanio.endpoint}/{bucket}/lake/{key}"
        bucket_attacks = [
            f"SELECT * FROM read_parquet('{s3_url}')",
            f"SELECT * FROM read_parquet('{http_url}')",
            f"SELECT * FROM read_text('{http_url}')",
            f"CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'x', ENDPOINT '{nanio.endpoint}')",
            f"COPY (SELECT 1) TO 's3://{bucket}/lake/datasets/workers/x.parquet'",
            "SELECT * FROM duckdb_secrets()",
        ]
        try:
            for sql in attacks(lakehouse.cache.root) + bucket_attacks:
                with pytest.raises(QueryError):
                    engine.execute(sql).reader.read_all()
                result = engine.execute("SELECT count(*) AS n FROM workers").reader.read_all()
                assert result.to_pylist() == [{"n": 3}], sql
        finally:
            engine.close()
        assert list(store.keys()) == keys
        assert {key: object_sha256(store, key) for key in keys} == before
    assert not list(Path("/tmp").glob("lakehoused-*"))


# -- the prefix listing ----------------------------------------------------------------------


class Requests:
    """Every request a minio client sends, by method and query (counted at the client)."""

    def __init__(self, bucket: Bucket) -> None:
        self.sent: list[tuple[str, dict]] = []
        original = bucket.client._url_open

        def counting(method, region, **kwargs):
            self.sent.append((method, dict(kwargs.get("query_params") or {})))
            return original(method, region, **kwargs)

        bucket.client._url_open = counting  # type: ignore[method-assign]

    def listings(self) -> list[str]:
        return [q.get("prefix", "") for m, q in self.sent if m == "GET" and "list-type" in q]


def test_a_listing_never_walks_done_or_rejected(nanio):
    bucket_name = nanio.new_bucket()
    client = nanio.client()

    def put(key: str) -> None:
        client.put_object(bucket_name, key, io.BytesIO(b"a\n1\n"), 4)

    for i in range(40):
        put(f"in/.done/old-{i}.csv")
    for i in range(5):
        put(f"in/.rejected/bad-{i}.csv")
    for key in ("in/a.csv", "in/b.csv", "in/sales/d1.csv", "in/sales/2026/d2.csv"):
        put(key)
    for key in ("in/.hidden/x.csv", "in/copying.part/x.csv", "in/x.csv.tmp"):
        put(key)
    put("elsewhere/not-ours.csv")
    bucket = Bucket(nanio.location(bucket_name, "in/"), setting="inbox.url")
    requests = Requests(bucket)
    handed: list[PurePosixPath] = []
    watcher = PrefixWatcher(
        bucket, rescan_s=0, on_ready=lambda n, s, seen: handed.append(n), notifications=False
    )
    assert watcher.scan() == 4
    assert sorted(map(str, handed)) == ["a.csv", "b.csv", "sales/2026/d2.csv", "sales/d1.csv"]
    # One listing per folder that can hold files to ingest; none of the hidden ones.
    assert sorted(requests.listings()) == ["in/", "in/sales/", "in/sales/2026/"]
    assert watcher.pending() == []
    assert watcher.scan() == 0  # unchanged: nothing handed over twice
    put("in/a.csv")  # the same bytes uploaded again (same ETag): still the same upload
    client.put_object(bucket_name, "in/b.csv", io.BytesIO(b"a\n22\n"), 5)
    assert watcher.scan() == 1 and handed[-1] == PurePosixPath("b.csv")
    # A key that sorts before everything seen still arrives (no start_after shortcut).
    put("in/0-early.csv")
    assert watcher.scan() == 1 and handed[-1] == PurePosixPath("0-early.csv")


def test_keys_that_are_no_file_name_are_never_handed_over():
    # S3 allows them; nanio (a filesystem) refuses them, so only the rule is tested here.
    for key in ("a//b.csv", "./a.csv", "a/../b.csv", "/a.csv", "a/"):
        assert not usable(key), key
    assert usable("sales/2026/d.csv") and usable("a.csv")


def test_notifications_are_detected_once_never_polled(nanio):
    bucket = Bucket(nanio.location(nanio.new_bucket(), "in/"), setting="inbox.url")
    requests = Requests(bucket)
    watcher = PrefixWatcher(bucket, rescan_s=0, on_ready=lambda *a: None, notifications=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 5
        while watcher.notifications is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)
        asks = [q for m, q in requests.sent if "events" in q]
        assert watcher.notifications is False
        assert len(asks) == 1  # asked once; nanio has no such API, so never again
        assert len(requests.sent) == 2  # that, and the one listing at start
    finally:
        watcher.stop()


def test_a_notification_stream_wakes_a_listing(tmp_path):
    # The stream MinIO sends (keep-alive spaces, one JSON line per event), from a real HTTP
    # server on loopback, read by the watcher's own reader.
    lines = [b" ", b" ", b'{"Records":[{"s3":{"object":{"key":"in/a.csv"}}}]}\n']

    class Stream(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for line in lines:
                self.wfile.write(line)
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args) -> None:
            pass

    with socketserver.TCPServer(("127.0.0.1", 0), Stream) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        port = server.server_address[1]
        response = urllib3.PoolManager().request(
            "GET", f"http://127.0.0.1:{port}/", preload_content=False
        )
        watcher = PrefixWatcher.__new__(PrefixWatcher)
        watcher._stopping, watcher._wake, watcher._stream = (
            threading.Event(),
            threading.Event(),
            None,
        )
        watcher._follow(response)
        assert watcher._wake.is_set()


def test_the_probe_finds_whether_deletes_are_conditional(nanio):
    inbox = BucketInbox(nanio.location(nanio.new_bucket(), "in/"), rescan_s=0)
    inbox.start(lambda source: None)
    try:
        assert inbox.conditional_deletes is False  # nanio, like MinIO, ignores If-Match
        assert list_keys(nanio.client(), inbox.bucket.name) == []  # the probe cleaned up
    finally:
        inbox.stop()


def test_a_stopped_server_is_a_passing_problem_of_the_inbox(tmp_path):
    nanio = Nanio(tmp_path / "nanio").start()
    try:
        inbox = BucketInbox(nanio.location(nanio.new_bucket(), ""), rescan_s=0.05)
        inbox.start(lambda source: None)
        nanio.stop()
        deadline = time.monotonic() + 5
        while inbox.problem is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert inbox.problem is not None and "connection refused" in inbox.problem
        assert inbox.error is None
        nanio.start()
        deadline = time.monotonic() + 10
        while inbox.problem is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inbox.problem is None
        inbox.stop()
    finally:
        nanio.stop()


def test_a_gzip_upload_is_staged_as_stored(nanio, tmp_path):
    # Tools often upload x.csv.gz with Content-Encoding: gzip; the download must not inflate
    # it, or the staged file would not be what its name (and the sha256) says.
    import gzip

    from lakehoused.inbox import SourceFile

    data = gzip.compress(b"id,name\n1,a\n")
    bucket = nanio.new_bucket()
    nanio.client().put_object(
        bucket, "in/x.csv.gz", io.BytesIO(data), len(data), metadata={"Content-Encoding": "gzip"}
    )
    inbox = BucketInbox(nanio.location(bucket, "in/"), rescan_s=0, deletes=False)
    staged = inbox.stage(SourceFile(PurePosixPath("x.csv.gz"), time.time()), tmp_path / "x.csv.gz")
    assert staged.path.read_bytes() == data
    assert staged.sha256 == hashlib.sha256(data).hexdigest()


def test_gc_over_a_bucket_store_keeps_what_is_referenced_or_in_flight(nanio, tmp_path, write_csv):
    from lakehoused import operations

    bucket = nanio.new_bucket()
    (tmp_path / "inbox").mkdir()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[store]\nurl = "s3://{bucket}/lake/"\n' + nanio.toml())
    config = load_config(
        config_file,
        environ={"LAKEHOUSED_TEST_S3_ACCESS": ACCESS_KEY, "LAKEHOUSED_TEST_S3_SECRET": SECRET_KEY},
    )
    with Lakehouse(config) as lakehouse:
        lakehouse.ingest_file(write_csv("w.csv", "n\n1\n"))
        (kept,) = lakehouse.store.keys()
        orphan, path = parquet(tmp_path, [9])
        lakehouse.store.put(orphan, path)  # as a crash after the put leaves one
        with lakehouse.staging.workspace():  # an ingest in flight may be about to use it
            report = operations.gc(lakehouse, grace_s=0)
        assert report.objects == [] and report.skipped_in_flight == 1
        assert operations.gc(lakehouse, grace_s=3600).objects == []  # younger than the grace
        assert operations.gc(lakehouse, grace_s=0).objects == [orphan]
        assert list(lakehouse.store.keys()) == [kept]
        assert operations.verify(lakehouse) == []


def test_a_key_rewritten_in_place_gets_advice_once(nanio, tmp_path, caplog):
    from lakehoused.inbox import SourceFile

    bucket = nanio.new_bucket()
    inbox = BucketInbox(nanio.location(bucket, "in/"), rescan_s=0)
    assert inbox.conditional_deletes is False
    for n in range(3):
        nanio.client().put_object(bucket, "in/latest.csv", io.BytesIO(b"n\n%d\n" % n), 4)
        source = SourceFile(PurePosixPath("latest.csv"), time.time())
        staged = inbox.stage(source, tmp_path / f"{n}" / "latest.csv")
        assert inbox.archive(staged) is True
    advice = [r for r in caplog.records if "uploaded again under the same key" in r.getMessage()]
    assert len(advice) == 1 and 'after_ingest = "keep"' in advice[0].getMessage()
    assert list_keys(nanio.client(), bucket) == [
        "in/.done/latest.1.csv",
        "in/.done/latest.2.csv",
        "in/.done/latest.csv",
    ]
