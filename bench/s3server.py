"""nanio, a real S3-protocol server from PyPI, run on 127.0.0.1 for the tests and benchmarks.

nanio checks request signatures, so a wrong key fails as it does on MinIO or S3. It binds
every interface unless told, so it is always started with `--host 127.0.0.1`. Its data
directory holds one folder per bucket and one file per object.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from minio import Minio

from lakehoused.config import S3Endpoint, S3Location, Secret

ACCESS_KEY = "lakehoused-test-access-key-0f3a"
SECRET_KEY = "lakehoused-test-secret-key-9c41e7d2b8"
ACCESS_ENV = "LAKEHOUSED_TEST_S3_ACCESS"
SECRET_ENV = "LAKEHOUSED_TEST_S3_SECRET"
KEYS_ENV = {ACCESS_ENV: ACCESS_KEY, SECRET_ENV: SECRET_KEY}
"""The environment a daemon reads its keys from (the `[s3]` section of `toml()` names it)."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Nanio:
    """One nanio process on 127.0.0.1, its data under `data_dir`; stop and start it at will."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"nanio-{self.port}.log"

    def start(self) -> Nanio:
        """Start the server and wait until it answers a signed request."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "NANIO_ACCESS_KEY": ACCESS_KEY,
            "NANIO_SECRET_KEY": SECRET_KEY,
            "NANIO_LOG_LEVEL": "warning",
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nanio",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--no-access-log",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        client = self.client()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nanio exited: {self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                client.list_buckets()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nanio did not answer on {self.endpoint}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> Minio:
        """A minio client with the test keys."""
        return Minio(self.endpoint, ACCESS_KEY, SECRET_KEY, secure=False)

    def new_bucket(self) -> str:
        """A fresh, empty bucket."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.client().make_bucket(name)
        return name

    def endpoint_config(self) -> S3Endpoint:
        """The `[s3]` settings of this server, keys read in."""
        return S3Endpoint(
            endpoint=self.endpoint,
            region="us-east-1",
            secure=False,
            access_key_env=ACCESS_ENV,
            secret_key_env=SECRET_ENV,
            access_key=Secret(ACCESS_KEY),
            secret_key=Secret(SECRET_KEY),
        )

    def location(self, bucket: str, prefix: str = "") -> S3Location:
        """A bucket prefix on this server."""
        return S3Location(bucket, prefix, self.endpoint_config())

    def toml(self) -> str:
        """The `[s3]` section of a config.toml for this server."""
        return (
            f'[s3]\nendpoint = "{self.endpoint}"\nregion = "us-east-1"\nsecure = false\n'
            f'access_key_env = "{ACCESS_ENV}"\nsecret_key_env = "{SECRET_ENV}"\n'
        )
