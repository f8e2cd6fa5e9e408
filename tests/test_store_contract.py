"""The ObjectStore contract: every backend passes the same tests (litestream's
`replica_client_test.go` is the model). A backend joins by adding a factory to BACKENDS."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lakehoused.errors import StoreError
from lakehoused.store import (
    OBJECTS_PREFIX,
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    object_key,
    object_sha256,
)


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    yield LocalObjectStore(tmp_path / "objects")


def _s3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    # A real S3-protocol server (nanio), a fresh bucket, objects under a prefix.
    nanio = request.getfixturevalue("nanio")
    yield S3ObjectStore(nanio.location(nanio.new_bucket(), "lake/"))


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Iterator[ObjectStore]]] = {
    "local": _local,
    "s3": _s3,
}
"""name -> a generator yielding a fresh, empty store (and cleaning up after it)."""


@pytest.fixture(params=sorted(BACKENDS))
def store(request, tmp_path) -> Iterator[ObjectStore]:
    yield from BACKENDS[request.param](request, tmp_path)


def finished(tmp_path: Path, data: bytes, name: str = "object.parquet") -> Path:
    """A finished local file, as a converter leaves one in its workspace."""
    path = tmp_path / "workspace" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def key_of(data: bytes, dataset: str = "d") -> str:
    return object_key(dataset, hashlib.sha256(data).hexdigest())


def test_put_then_open_exists_stat_and_hash(store, tmp_path):
    data = b"parquet bytes" * 1000
    key = key_of(data)
    assert not store.exists(key) and store.stat(key) is None
    assert store.put(key, finished(tmp_path, data)) is True
    assert store.exists(key)
    with store.open(key) as fh:
        assert fh.read() == data
    info = store.stat(key)
    assert info is not None and (info.key, info.size) == (key, len(data))
    assert abs(time.time() - info.modified) < 60
    assert object_sha256(store, key) == hashlib.sha256(data).hexdigest()


def test_put_if_absent_never_overwrites(store, tmp_path):
    key = key_of(b"one")
    assert store.put(key, finished(tmp_path, b"one", "a")) is True
    assert store.put(key, finished(tmp_path, b"two", "b")) is False
    with store.open(key) as fh:
        assert fh.read() == b"one"


def test_a_put_of_an_existing_key_makes_it_young_again(store, tmp_path):
    # gc's grace period must cover an old object an ingest is about to reference again.
    key = key_of(b"old")
    store.put(key, finished(tmp_path, b"old", "a"))
    first = store.stat(key).modified
    time.sleep(1.1)  # S3 times are whole seconds
    assert store.put(key, finished(tmp_path, b"old", "b")) is False
    assert store.stat(key).modified > first
    with store.open(key) as fh:
        assert fh.read() == b"old"


def test_the_finished_file_is_not_consumed(store, tmp_path):
    # The workspace removes its own files; a put must not depend on them afterwards.
    source = finished(tmp_path, b"abc")
    key = key_of(b"abc")
    store.put(key, source)
    source.unlink()
    with store.open(key) as fh:
        assert fh.read() == b"abc"


def test_keys_lists_every_object_sorted_and_by_prefix(store, tmp_path):
    keys = []
    for i, dataset in enumerate(["b", "a", "a", "c"]):
        data = f"object {i}".encode()
        key = key_of(data, dataset)
        store.put(key, finished(tmp_path, data, f"f{i}"))
        keys.append(key)
    assert list(store.keys(OBJECTS_PREFIX)) == sorted(keys)
    assert list(store.keys("datasets/a/")) == sorted(k for k in keys if "/a/" in k)
    assert list(store.keys("datasets/zzz/")) == []


def test_delete_and_missing_objects(store, tmp_path):
    key = key_of(b"x")
    store.put(key, finished(tmp_path, b"x"))
    store.delete(key)
    assert not store.exists(key) and store.stat(key) is None
    assert list(store.keys(OBJECTS_PREFIX)) == []
    store.delete(key)  # missing is fine
    with pytest.raises(StoreError):
        store.open(key)


@pytest.mark.parametrize("bad", ["../x.parquet", "datasets/../../x", "other/a.parquet"])
def test_keys_outside_the_store_are_refused(store, tmp_path, bad):
    with pytest.raises(StoreError):
        store.put(bad, finished(tmp_path, b"x"))


def test_concurrent_puts_of_one_key_leave_one_whole_object(store, tmp_path):
    data = b"z" * (3 << 20)
    key = key_of(data)
    files = [finished(tmp_path, data, f"c{i}") for i in range(4)]
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(store.put(key, f))) for f in files
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert object_sha256(store, key) == hashlib.sha256(data).hexdigest()


def test_a_large_object_round_trips(store, tmp_path):
    # Large enough that a remote backend uploads it in parts.
    data = bytes(range(256)) * (40 * 4096 + 7)  # ~40 MiB
    key = key_of(data)
    store.put(key, finished(tmp_path, data))
    assert store.stat(key).size == len(data)
    assert object_sha256(store, key) == hashlib.sha256(data).hexdigest()


def test_an_object_is_never_seen_half_written(store, tmp_path):
    # While a large put is under way (in parts, for a bucket), whoever looks at the key sees
    # nothing or the whole object: never a prefix of it.
    data = bytes(range(256)) * (24 * 4096 + 3)  # ~24 MiB
    key = key_of(data)
    source = finished(tmp_path, data)
    seen: list[int | None] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            info = store.stat(key)
            seen.append(None if info is None else info.size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert store.put(key, source) is True
    finally:
        done.set()
        watcher.join()
    assert set(seen) <= {None, len(data)}
    assert object_sha256(store, key) == hashlib.sha256(data).hexdigest()


def test_keys_list_only_objects(store, tmp_path):
    data = b"only objects"
    key = key_of(data)
    store.put(key, finished(tmp_path, data))
    assert list(store.keys()) == [key]
    assert store.url and "secret" not in store.url.lower()
