"""SIGHUP: which settings a running daemon takes from its config file again, and which wait.

A reload reads and validates the file exactly as a start does, then builds the one `Config`
the daemon runs with from then on: the running one, with the settings that can change
safely taken from the file. Every other setting keeps its running value until a restart.
The daemon swaps that value in (`Daemon.apply_config`); nothing is edited in place.

Safe to change while running, because each is read afresh where it is used:
- `datasets.*`: every per-dataset option, read for each file when its ingest starts;
- `retention.*`: read each time retention looks at a dataset;
- `server.max_rows`, `server.query_timeout_s`, `server.slow_query_ms`: read for each query;
- `server.log_level`.

Everything else -- paths and URLs, the inbox's timings, the address, the token, the memory
limit DuckDB locked at start, the memory cache -- is built into running parts, so a change
to it waits for a restart and the log says so.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lakehoused.config import Config

RELOADABLE_SERVER = ("max_rows", "query_timeout_s", "slow_query_ms", "log_level")
"""`server.*` keys a reload applies (with every `datasets.*` key)."""
_SECTIONS = ("inbox", "store", "state", "server", "retention", "s3")
_SECRET = {
    "server.token": "server.token_env (the token's value)",
    "s3.access_key": "s3.access_key_env (the key's value)",
    "s3.secret_key": "s3.secret_key_env (the key's value)",
}


@dataclass(frozen=True)
class Change:
    """One setting that differs between the running config and the file."""

    key: str  # dotted, as in config.toml
    before: object
    after: object

    def describe(self) -> str:
        """`key: before -> after`, never a secret's value."""
        if self.key in _SECRET.values():
            return f"{self.key} changed"
        return f"{self.key}: {_show(self.before)} -> {_show(self.after)}"


@dataclass(frozen=True)
class Reload:
    """What a reload does: the config to run with, what it applied, what needs a restart."""

    config: Config
    applied: list[Change] = field(default_factory=list)
    needs_restart: list[Change] = field(default_factory=list)


def plan(running: Config, loaded: Config) -> Reload:
    """The reload of `loaded` (the file, validated) into a daemon running with `running`."""
    applied: list[Change] = []
    restart: list[Change] = []
    for section in _SECTIONS:
        old, new = getattr(running, section), getattr(loaded, section)
        if old is None or new is None:  # no [s3] on one side: the whole section changed
            if old != new:
                restart.append(Change(section, "(none)" if old is None else "...", "..."))
            continue
        for f in dataclasses.fields(old):
            before, after = getattr(old, f.name), getattr(new, f.name)
            if before == after:
                continue
            key = f"{section}.{f.name}"
            if key in _SECRET:  # say that it changed, never what it was or is
                key, before, after = _SECRET[key], None, None
            safe = section == "retention" or (section == "server" and f.name in RELOADABLE_SERVER)
            (applied if safe else restart).append(Change(key, before, after))
    for name in sorted(set(running.datasets) | set(loaded.datasets)):
        before, after = running.datasets.get(name), loaded.datasets.get(name)
        if before != after:
            applied.append(Change(f"datasets.{name}", before, after))
    server = dataclasses.replace(
        running.server, **{k: getattr(loaded.server, k) for k in RELOADABLE_SERVER}
    )
    config = dataclasses.replace(
        running, server=server, datasets=loaded.datasets, retention=loaded.retention
    )
    return Reload(config, applied, restart)


def _show(value: object) -> str:
    if value is None:
        return "(default)"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Only the options set, as they would be written in config.toml.
        defaults = type(value)()
        set_ = {
            f.name: getattr(value, f.name)
            for f in dataclasses.fields(value)
            if getattr(value, f.name) != getattr(defaults, f.name)
        }
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in set_.items()) + "}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
