"""The local object store: atomic, content-addressed, never overwritten."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from lakehoused.errors import StoreError
from lakehoused.store import LocalObjectStore, object_key


def put_bytes(store: LocalObjectStore, data: bytes, dataset: str = "d") -> tuple[str, bool]:
    with store.new_temp() as temp:
        temp.path.write_bytes(data)
        sha256, size = temp.finish()
        assert size == len(data)
        key = object_key(dataset, sha256)
        return key, store.put(key, temp)


def test_put_is_content_addressed_and_leaves_no_temp(tmp_path):
    store = LocalObjectStore(tmp_path)
    key, created = put_bytes(store, b"parquet bytes")
    assert created
    assert key == f"datasets/d/{hashlib.sha256(b'parquet bytes').hexdigest()}.parquet"
    assert store.local_path(key).read_bytes() == b"parquet bytes"
    assert store.sha256(key) == hashlib.sha256(b"parquet bytes").hexdigest()
    assert list(store.object_keys()) == [key]
    assert list(store.temp_dir.iterdir()) == []


def test_an_existing_key_is_reused_never_overwritten(tmp_path):
    store = LocalObjectStore(tmp_path)
    key, _ = put_bytes(store, b"one")
    with store.new_temp() as temp:
        temp.path.write_bytes(b"other bytes under the same key")
        temp.finish()
        assert store.put(key, temp) is False
    assert store.local_path(key).read_bytes() == b"one"


def test_keys_outside_the_store_are_refused(tmp_path):
    store = LocalObjectStore(tmp_path / "s")
    for key in ("../escape.parquet", "datasets/../../x", "/etc/passwd"):
        with pytest.raises(StoreError):
            store.local_path(key)


def test_stale_temps_are_removed_on_open_but_not_live_ones(tmp_path):
    store = LocalObjectStore(tmp_path)
    live = store.new_temp()  # held by this process: an ingest in flight
    stale = store.temp_dir / "crashed.parquet.tmp"
    stale.write_bytes(b"half a file")
    LocalObjectStore(tmp_path)  # opening again cleans up
    assert not stale.exists()
    assert live.path.exists()
    assert store.ingests_in_flight() == 1
    live.release()
    assert store.ingests_in_flight() == 0


def test_a_temp_left_by_a_killed_process_is_stale(tmp_path):
    store = LocalObjectStore(tmp_path)
    code = (
        "import os, sys; from lakehoused.store import LocalObjectStore; "
        f"t = LocalObjectStore({str(tmp_path)!r}).new_temp(); print(t.path, flush=True); "
        "os.kill(os.getpid(), 9)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    path = out.stdout.strip()
    assert os.path.exists(path)
    assert store.ingests_in_flight() == 0  # the lock died with its process
    assert store.remove_stale_temps(grace_s=0) == [os.path.basename(path)]


def test_grace_period_keeps_young_temps(tmp_path):
    store = LocalObjectStore(tmp_path)
    young = store.temp_dir / "young.parquet.tmp"
    young.write_bytes(b"x")
    assert store.remove_stale_temps(grace_s=60) == []
    old = time.time() - 120
    os.utime(young, (old, old))
    assert store.remove_stale_temps(grace_s=60) == ["young.parquet.tmp"]


def test_delete_and_missing_object(tmp_path):
    store = LocalObjectStore(tmp_path)
    key, _ = put_bytes(store, b"x")
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(StoreError, match="missing"):
        store.sha256(key)
