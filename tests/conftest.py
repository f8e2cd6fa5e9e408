"""Shared fixtures: real files under tmp_path, real SQLite, real DuckDB."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.gen_workers

from bench.gen_workers import write_workers  # noqa: E402
from tests.s3server import nanio, s3_bucket  # noqa: E402, F401 (fixtures: a real S3 server)


@pytest.fixture(scope="session")
def workers_500k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 500,000-row workers file with its traps, generated once per test session."""
    path = tmp_path_factory.mktemp("workers") / "workers.csv"
    write_workers(500_000, path)
    return path


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """Write text (or bytes) to a file under tmp_path/src and return its path."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
        return path

    return write


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a real config.toml under tmp_path (inbox, store, state beside it); return its path.

    Keyword arguments add TOML text per section, e.g. `server='port = 0'` or
    `datasets='[datasets.w]\\nnull_values = ["N/A"]'`.
    """

    def make(**sections: str) -> Path:
        (tmp_path / "inbox").mkdir(exist_ok=True)
        base = {
            "inbox": 'path = "inbox"\nsettle_ms = 100\nrescan_s = 0',
            "store": 'path = "var/objects"',
            "state": 'path = "var/state"',
            "server": 'host = "127.0.0.1"\nport = 0',
        }
        text = ""
        for section, body in base.items():
            extra = sections.pop(section, "")
            text += f"[{section}]\n{body}\n{extra}\n\n"
        text += "\n".join(sections.values())
        path = tmp_path / "config.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return make


@pytest.fixture
def make_daemon(make_config):
    """Start the real daemon on a fresh inbox; `make_daemon(env={...}, **config sections)`.

    Later calls in one test restart it on the same config (after a crash, say).
    """
    from tests.daemon_process import Daemon

    started: list[Daemon] = []
    state: dict[str, Path] = {}

    def make(
        env: dict[str, str] | None = None, args: tuple[str, ...] = (), **sections: str
    ) -> Daemon:
        if "config" not in state:
            state["config"] = make_config(**sections)
        daemon = Daemon(state["config"], env or {}, args)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


class LakehouseBackend:
    """The server's backend over a real lakehouse without a daemon: no inbox, no converters.

    For routes that read only the log and the catalog (/events, the page); events are
    appended straight to `lakehouse.log`.
    """

    ready = True

    def __init__(self, lakehouse) -> None:
        self.lakehouse = lakehouse
        self.config = lakehouse.config
        self.log = lakehouse.log
        self.catalog = lakehouse.catalog
        self.engine = lakehouse.open_engine()


@pytest.fixture
async def lakehouse_client(aiohttp_client, make_config):
    """`make(**config sections)`: an aiohttp client of make_app over a LakehouseBackend."""
    from lakehoused.config import load_config
    from lakehoused.lakehouse import Lakehouse
    from lakehoused.server import make_app

    opened = []

    async def make(env: dict[str, str] | None = None, **sections: str):
        config = load_config(make_config(**sections), env or {})
        backend = LakehouseBackend(Lakehouse(config))
        opened.append(backend)
        client = await aiohttp_client(make_app(backend, config.server))
        client.backend = backend
        return client

    yield make
    for backend in opened:
        backend.engine.close()
        backend.lakehouse.close()


@pytest.fixture
def lakehouse(make_config):
    """A lakehouse on a fresh state directory: `lakehouse(datasets_toml, **config sections)`."""
    from lakehoused.config import load_config
    from lakehoused.lakehouse import Lakehouse

    opened: list[Lakehouse] = []

    def make(datasets: str = "", **sections: str) -> Lakehouse:
        lh = Lakehouse(load_config(make_config(datasets=datasets, **sections)))
        opened.append(lh)
        return lh

    yield make
    for lh in opened:
        lh.close()
