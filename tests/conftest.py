"""Shared fixtures: real files under tmp_path, real SQLite, real DuckDB."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for bench.gen_workers

from bench.gen_workers import write_workers  # noqa: E402


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
