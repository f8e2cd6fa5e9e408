"""Settings from config.toml, validated: the only module that reads TOML or the environment.

Defaults → parse → validate → build. Every error names the dotted key to change and the
bad value, except where the key looks like it holds a secret: then the value is withheld.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import ConfigError, RejectedFile
from .names import is_valid_dataset_name, normalise_dataset_name

CONFIG_ENV = "LAKEHOUSED_CONFIG"
"""Environment variable naming the config file when no path is given."""
DB_FILENAME = "lakehoused.db"
"""The SQLite file (event log and projection) inside ``state.path``."""

MODES = ("replace", "append")
"""Values of ``datasets.<name>.mode``."""
SCHEMA_CHANGES = ("reject", "add_columns")
"""Values of ``datasets.<name>.on_schema_change``."""
COLUMN_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
"""Column types ``datasets.<name>.types`` may force (stored upper-case)."""
ENCODINGS = ("utf-8", "latin-1", "utf-16")
"""Values of ``datasets.<name>.encoding``."""
AFTER_INGEST = ("archive", "delete", "keep")
"""Values of ``inbox.after_ingest``."""

# Relative to the config file's directory, as in the shipped config.toml.
_DEFAULT_PATHS = {"inbox": "inbox", "store": "var/objects", "state": "var/state"}
# Every key config.toml may hold, by section (the README documents each one).
KEYS: dict[str, tuple[str, ...]] = {
    "inbox": ("path", "url", "settle_ms", "rescan_s", "after_ingest"),
    "store": ("path", "url"),
    "state": ("path",),
    "server": (
        "host",
        "port",
        "max_rows",
        "query_timeout_s",
        "memory_limit",
        "memory_cache",
        "result_cache",
        "token_env",
    ),
    "datasets": (),
}
DATASET_KEYS = ("mode", "on_schema_change", "null_values", "types", "encoding", "delimiter")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A key named like one of these may hold a secret, so its value never appears in a message.
_SECRET_LIKE = re.compile(r"token|secret|passw|key|credential|auth", re.IGNORECASE)


@dataclass(frozen=True)
class DatasetOptions:
    """Per-dataset overrides from ``[datasets.<name>]``; the defaults suit most CSV files."""

    mode: str | None = None  # "replace" | "append" | None = by location in the inbox
    on_schema_change: str = "reject"  # "reject" | "add_columns"
    null_values: tuple[str, ...] = ()  # tokens read as NULL besides the empty cell
    types: Mapping[str, str] = field(default_factory=dict)  # column -> COLUMN_TYPES member
    encoding: str = "utf-8"  # one of ENCODINGS
    delimiter: str | None = None  # one character; None = by file suffix


@dataclass(frozen=True)
class InboxConfig:
    """Where files are dropped and how the watcher treats them."""

    path: Path
    settle_ms: int = 250
    rescan_s: float = 30
    after_ingest: str = "archive"  # archive | delete | keep


@dataclass(frozen=True)
class StoreConfig:
    """The local directory holding content-addressed Parquet objects."""

    path: Path


@dataclass(frozen=True)
class StateConfig:
    """The directory holding lakehoused.db (the event log and the catalog projection)."""

    path: Path


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP server and the query engine's limits."""

    host: str = "127.0.0.1"
    port: int = 8765  # 0 = any free port
    max_rows: int = 10000
    query_timeout_s: float = 30
    memory_limit: str = "2GB"
    memory_cache: str = "512MB"  # datasets held in memory (part of memory_limit); "0MB" = off
    result_cache: str = "64MB"  # answers kept until the datasets they read change; "0MB" = off
    token_env: str | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def memory_cache_bytes(self) -> int:
        """memory_cache in bytes."""
        return size_bytes(self.memory_cache)

    @property
    def result_cache_bytes(self) -> int:
        """result_cache in bytes."""
        return size_bytes(self.result_cache)


@dataclass(frozen=True)
class Config:
    """Every setting lakehoused runs with, validated and with absolute paths."""

    path: Path | None  # the config file read (None when built from defaults)
    inbox: InboxConfig
    store: StoreConfig
    state: StateConfig
    server: ServerConfig
    datasets: Mapping[str, DatasetOptions] = field(default_factory=dict)

    def dataset_options(self, name: str) -> DatasetOptions:
        """The options configured for dataset ``name``, or the defaults."""
        return self.datasets.get(name, DatasetOptions())

    @property
    def db_path(self) -> Path:
        """The SQLite file of the event log and projection."""
        return self.state.path / DB_FILENAME


def default_config(root: Path) -> Config:
    """All defaults, with the default relative paths resolved against ``root``."""
    return _build({}, _absolute(Path(root)), {}, None)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError naming the file or the dotted key.

    The file is ``path``, else ``$LAKEHOUSED_CONFIG``, else ``./config.toml``.
    """
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_ENV) or "config.toml"
    file = _absolute(Path(chosen))
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} not found; pass --config PATH or set {CONFIG_ENV}"
        ) from None
    except OSError as e:
        raise ConfigError(f"read config file {file}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"read config file {file}: not UTF-8 text (byte {e.start})") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"read config file {file}: invalid TOML: {e}") from e
    return _build(doc, file.parent, env, file)


# -- build: one function per section, each given its already-parsed table ------------------


def _build(doc: dict[str, Any], base: Path, env: Mapping[str, str], file: Path | None) -> Config:
    _check_keys(doc, "", tuple(KEYS))
    sections = {name: _table(doc.get(name, {}), name) for name in KEYS}
    for name, keys in KEYS.items():
        if name != "datasets":
            _check_keys(sections[name], name, keys)

    inbox = sections["inbox"]
    config = Config(
        path=file,
        inbox=InboxConfig(
            path=_location(inbox, "inbox", base),
            **_options(
                inbox,
                "inbox",
                settle_ms=_integer(0),
                rescan_s=_number(lambda v: v >= 0, "a number >= 0 (0 = off)"),
                after_ingest=_one_of(AFTER_INGEST),
            ),
        ),
        store=StoreConfig(_location(sections["store"], "store", base)),
        state=StateConfig(_location(sections["state"], "state", base)),
        server=_server(sections["server"], env),
        datasets=MappingProxyType(
            {name: _dataset(raw, name) for name, raw in sections["datasets"].items()}
        ),
    )
    for section in ("store", "state"):
        _not_inside_inbox(getattr(config, section).path, config.inbox.path, section)
    return config


def _server(table: dict[str, Any], env: Mapping[str, str]) -> ServerConfig:
    opts = _options(
        table,
        "server",
        host=_string,
        port=_integer(0, 65535),
        max_rows=_integer(1),
        query_timeout_s=_number(lambda v: v > 0, "a number > 0"),
        memory_limit=_memory_limit,
        memory_cache=_memory_size(allow_zero=True),
        result_cache=_memory_size(allow_zero=True),
        token_env=_env_name,
    )
    token = _read_token(opts["token_env"], env) if "token_env" in opts else None
    host = opts.get("host", ServerConfig.host)
    if token is None and not _is_loopback(host):
        raise ConfigError(
            f"server.host: binding {host} (not loopback) requires an API token; "
            "set server.token_env"
        )
    return ServerConfig(token=token, **opts)


def _dataset(raw: Any, name: str) -> DatasetOptions:
    key = f"datasets.{name}"
    if not is_valid_dataset_name(name):
        hint = ""
        # A name normalisation cannot save gets no hint.
        with contextlib.suppress(RejectedFile):
            hint = f"; did you mean datasets.{normalise_dataset_name(name)}?"
        raise ConfigError(
            f"{key}: not a valid dataset name; use lower case letters, digits and _{hint}"
        )
    table = _table(raw, key)
    _check_keys(table, key, DATASET_KEYS)
    return DatasetOptions(
        **_options(
            table,
            key,
            mode=_one_of(MODES),
            on_schema_change=_one_of(SCHEMA_CHANGES),
            null_values=_null_values,
            types=_types,
            encoding=_encoding,
            delimiter=_delimiter,
        )
    )


def _location(table: dict[str, Any], section: str, base: Path) -> Path:
    """``path`` or a ``file://`` ``url``, absolute; S3 is refused until this build has it."""
    if "path" in table and "url" in table:
        raise ConfigError(f"{section}.url: give {section}.path or {section}.url, not both")
    if "url" in table:
        raw = _string(table["url"], f"{section}.url")
        # Only the scheme and host are echoed: a URL may carry credentials.
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme == "s3":
            raise ConfigError(
                f"{section}.url: S3 is not supported by this build yet; "
                f"use {section}.path for a local directory"
            )
        if scheme != "file":
            got = f"scheme {scheme!r}" if scheme else "no scheme"
            raise ConfigError(
                f"{section}.url: must be a file:// or s3:// URL, got {got}; "
                f"for a directory use {section}.path"
            )
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{section}.url: a file:// URL must name a local path like file:///srv/data, "
                f"got host {parts.hostname!r}"
            )
        rel = unquote(parts.path)
        if not rel:
            raise ConfigError(f"{section}.url: a file:// URL needs a path")
    else:
        rel = _string(table.get("path", _DEFAULT_PATHS[section]), f"{section}.path")
    return _absolute(base / rel)


def _not_inside_inbox(path: Path, inbox: Path, section: str) -> None:
    """Refuse a store or state directory the watcher would see (and try to ingest)."""
    if not path.is_relative_to(inbox):
        return
    rel = path.relative_to(inbox)
    # Anything under a dot-folder of the inbox is ignored by the watcher, so it is safe.
    if not any(part.startswith(".") for part in rel.parts):
        raise ConfigError(
            f"{section}.path: {path} is inside inbox.path {inbox}, so its files would be "
            f"ingested; move it out of the inbox"
        )


def _read_token(var: str, env: Mapping[str, str]) -> str:
    """The API token from the environment, else from a systemd credential file."""
    value = env.get(var)
    if value:
        return value
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / var
        if cred.is_file():
            try:
                value = cred.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                # The message names the file, never its content.
                raise ConfigError(
                    f"server.token_env: cannot read credential file {cred}: {type(e).__name__}"
                ) from None
            if value:
                return value
    where = f" nor in the credential file {cred_dir}/{var}" if cred_dir else ""
    raise ConfigError(
        f"server.token_env: the API token is not set: environment variable {var} is "
        f"missing or empty{where}"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def _absolute(path: Path) -> Path:
    # Lexical, like litestream's filepath.Abs: a symlinked config dir keeps its own siblings.
    return Path(os.path.abspath(path))


# -- parse and validate: small checkers, each (value, dotted key) -> value ------------------

_Check = Callable[[Any, str], Any]


def _bad(key: str, expected: str, value: Any) -> ConfigError:
    """``<key>: must be <expected>, got <value>``; the value withheld for a secret-like key."""
    leaf = key.rsplit(".", 1)[-1]
    if _SECRET_LIKE.search(leaf):
        got = f"a {_toml_type(value)} (value not shown)"
    elif isinstance(value, bool):
        got = "true" if value else "false"
    else:
        got = repr(value)
    return ConfigError(f"{key}: must be {expected}, got {got}")


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str | int | float):
        return {str: "string", int: "integer", float: "float"}[type(value)]
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def _check_keys(table: dict[str, Any], prefix: str, allowed: tuple[str, ...]) -> None:
    dot = f"{prefix}." if prefix else ""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {dot}{close[0]}?" if close else ""
            raise ConfigError(f"{dot}{key}: unknown key{hint}")


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(key, "a table", value)
    return value


def _options(table: dict[str, Any], section: str, **checks: _Check) -> dict[str, Any]:
    """The keys present in ``table`` that have a check, checked; absent keys keep defaults."""
    return {
        name: check(table[name], f"{section}.{name}")
        for name, check in checks.items()
        if name in table
    }


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(key, "a non-empty string", value)
    return value


def _integer(lo: int, hi: int | None = None) -> _Check:
    expected = f"an integer >= {lo}" if hi is None else f"{lo}-{hi}"

    def check(value: Any, key: str) -> int:
        # bool is an int subclass in Python, but "port = true" is a mistake.
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < lo
            or (hi is not None and value > hi)
        ):
            raise _bad(key, expected, value)
        return value

    return check


def _number(ok: Callable[[float], bool], expected: str) -> _Check:
    def check(value: Any, key: str) -> float:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise _bad(key, expected, value)
        return value

    return check


def _one_of(choices: tuple[str, ...]) -> _Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _bad(key, f"one of {', '.join(choices)}", value)
        return value

    return check


def _memory_limit(value: Any, key: str) -> str:
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise _bad(key, 'a size like "2GB", "512MB" or "1.5GiB"', value)
    return value


def _memory_size(*, allow_zero: bool) -> _Check:
    def check(value: Any, key: str) -> str:
        match = _MEMORY_RE.match(value) if isinstance(value, str) else None
        if (
            match is None
            or float(match.group(1)) < 0
            or (not allow_zero and not float(match.group(1)))
        ):
            raise _bad(key, 'a size like "512MB", "1GiB" or "0MB"', value)
        return value

    return check


_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_bytes(text: str) -> int:
    """A validated size such as "512MB" or "1.5GiB" in bytes."""
    match = _MEMORY_RE.match(text)
    if match is None:
        raise ConfigError(f"not a size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _env_name(value: Any, key: str) -> str:
    # Also used as a file name under $CREDENTIALS_DIRECTORY, so no "/" or "..".
    if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
        raise _bad(key, "the name of an environment variable (letters, digits, _)", value)
    return value


def _null_values(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _bad(key, "a list of non-empty strings", value)
    return tuple(_string(item, f"{key}[{i}]") for i, item in enumerate(value))


def _types(value: Any, key: str) -> Mapping[str, str]:
    table = _table(value, key)
    types = {}
    for column, name in table.items():
        if not isinstance(name, str) or name.upper() not in COLUMN_TYPES:
            raise _bad(f"{key}.{column}", f"one of {', '.join(COLUMN_TYPES)}", name)
        types[column] = name.upper()
    return MappingProxyType(types)


def _encoding(value: Any, key: str) -> str:
    if not isinstance(value, str) or value.lower() not in ENCODINGS:
        raise _bad(key, f"one of {', '.join(ENCODINGS)}", value)
    return value.lower()


def _delimiter(value: Any, key: str) -> str:
    # A quote or line break as delimiter would make every row ambiguous.
    if not isinstance(value, str) or len(value) != 1 or value in '"\r\n':
        raise _bad(key, "exactly one character (not a quote or line break)", value)
    return value
