"""A real S3-protocol server for the tests: nanio (bench/s3server.py) on 127.0.0.1.

One server serves the whole session (`nanio` fixture); each test takes fresh buckets
(`s3_bucket`). A test that stops the server mid-run starts its own (`Nanio(...)`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from minio import Minio

from bench.s3server import ACCESS_ENV, ACCESS_KEY, KEYS_ENV, SECRET_ENV, SECRET_KEY, Nanio

__all__ = ["ACCESS_ENV", "ACCESS_KEY", "KEYS_ENV", "SECRET_ENV", "SECRET_KEY", "Nanio"]


@pytest.fixture(scope="session")
def nanio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nanio]:
    """One nanio server for the session."""
    server = Nanio(tmp_path_factory.mktemp("nanio") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(nanio: Nanio) -> str:
    """A fresh bucket on the session's server."""
    return nanio.new_bucket()


def list_keys(client: Minio, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix`, recursively, sorted."""
    return sorted(o.object_name for o in client.list_objects(bucket, prefix, recursive=True))
