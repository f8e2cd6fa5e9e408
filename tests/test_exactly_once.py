"""Exactly once under races the daemon cannot prevent: another writer, a retry, a writer that
changes a file in place after it was staged."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path, PurePosixPath

import pytest

from lakehoused import lifecycle, operations
from lakehoused.config import load_config
from lakehoused.errors import SourceChanged
from lakehoused.inbox import SourceFile
from lakehoused.inbox.local import staged_source
from lakehoused.ingest.pipeline import run_job
from lakehoused.lakehouse import Lakehouse


@pytest.fixture
def two_writers(make_config):
    """Two lakehouses on one state directory: the daemon and a `lakehoused ingest`, say."""
    config = load_config(make_config())
    with Lakehouse(config) as first, Lakehouse(config) as second:
        yield first, second


def inbox_file(lakehouse: Lakehouse, relpath: str, text: str) -> Path:
    path = lakehouse.config.inbox.path / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def ingest_with(lakehouse: Lakehouse, path: Path, relpath: str, convert):
    with lakehouse.staging.workspace() as workspace:
        source = SourceFile(PurePosixPath(relpath), time.time())
        staged = staged_source(source, path, workspace.source_path(path.name), path.as_uri())
        return lakehouse.ingestor.ingest(staged, workspace, convert)


def test_two_writers_with_the_same_bytes_register_them_once(two_writers):
    first, second = two_writers
    inbox_file(first, "s/a.csv", "n\n1\n")
    first.ingest_file(first.config.inbox.path / "s/a.csv")
    mine = inbox_file(first, "s/b.csv", "n\n2\n")

    def convert_while_the_other_registers_them(job):
        converted = run_job(job)
        if second.catalog.find_source("s", hashlib.sha256(mine.read_bytes()).hexdigest()) is None:
            copy = inbox_file(second, "s/b-copy.csv", "n\n2\n")
            assert second.ingest_file(copy).status == "registered"
        return converted

    outcome = ingest_with(first, mine, "s/b.csv", convert_while_the_other_registers_them)
    assert outcome.status == "duplicate"
    dataset = first.catalog.dataset("s")
    assert dataset is not None and dataset.rows == 2 and len(dataset.parts) == 2
    assert operations.verify(first) == []


def test_a_retried_conversion_never_rewrites_an_object_already_stored(two_writers):
    first, second = two_writers
    first.ingest_file(inbox_file(first, "s/a.csv", "n\n1\n"))
    mine = inbox_file(first, "s/b.csv", "n\n2\n")
    widened: list[bool] = []

    def convert_while_the_other_widens(job):
        converted = run_job(job)
        if not widened:
            widened.append(True)
            lifecycle.widen(second, "s", "n", "DOUBLE", "a fraction is coming")
        return converted

    outcome = ingest_with(first, mine, "s/b.csv", convert_while_the_other_widens)
    assert outcome.status == "registered"
    # The first attempt put its BIGINT object before its append was refused; the retry wrote
    # a DOUBLE one. Every object still holds the bytes its content address names.
    objects = sorted((first.config.store.path / "datasets" / "s").glob("*.parquet"))
    assert len(objects) >= 4
    for path in objects:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    assert operations.verify(first) == []


def test_a_file_changed_in_place_after_staging_is_taken_again(two_writers):
    first, _ = two_writers
    path = inbox_file(first, "w.csv", "n\n1\n")
    with first.staging.workspace() as workspace:
        source = SourceFile(PurePosixPath("w.csv"), time.time())
        staged = staged_source(source, path, workspace.source_path("w.csv"), path.as_uri())
        time.sleep(0.01)
        with open(path, "a", encoding="utf-8") as fh:  # a writer that is not done after all
            fh.write("2\n")
        if staged.path.stat().st_ino != path.stat().st_ino:
            pytest.skip("staging copied the file here: an in-place write cannot reach it")
        with pytest.raises(SourceChanged):
            first.ingestor.ingest(staged, workspace, run_job)
    assert first.log.last_seq == 0  # nothing registered with the hash of the other bytes
