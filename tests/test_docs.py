"""The README documents every command, config key and event type the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lakehoused import cli, config, events

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", [*cli.COMMANDS, "log export"])
def test_every_command_is_documented(command):
    assert f"`lakehoused {command}" in README


def _config_keys() -> list[str]:
    keys = [f"{section}.{key}" for section, names in config.KEYS.items() for key in names]
    return keys + [f"datasets.<name>.{key}" for key in config.DATASET_KEYS]


@pytest.mark.parametrize("key", _config_keys())
def test_every_config_key_is_documented(key):
    assert f"`{key}`" in README or f"`{key} =" in README


def _event_types_in_code() -> set[str]:
    found = set()
    for path in (ROOT / "lakehoused").rglob("*.py"):
        found |= set(re.findall(r'"((?:dataset|ingest)\.[a-z_]+)"', path.read_text()))
    return found


def test_event_types_are_declared_once_in_events_py():
    # Any wire name spelt in the code is one of the declared event types.
    assert _event_types_in_code() <= set(events.EVENT_TYPES)
    assert {"dataset.registered", "ingest.rejected", "ingest.duplicate"} <= set(events.EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(events.EVENT_TYPES))
def test_every_event_type_is_documented(event_type):
    assert f"`{event_type}`" in README


def test_the_bundled_config_loads_and_uses_the_defaults():
    loaded = config.load_config(ROOT / "config.toml")
    assert loaded.server.host == "127.0.0.1"
    assert loaded.inbox.path == ROOT / "inbox"


def test_readme_starts_with_the_two_commands():
    head = README.split("## ", 2)[1]
    assert "make run" in head and "make test" in head
