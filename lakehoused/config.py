"""Settings from config.toml, validated: the only module that reads TOML or the environment.

Defaults → parse → validate → build. Every error names the dotted key to change and the
bad value, except where the key looks like it holds a secret: then the value is withheld.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import config_checks as check
from .config_checks import FrozenDict, size_bytes
from .errors import ConfigError, RejectedFile
from .names import is_valid_dataset_name, normalise_dataset_name

CONFIG_ENV = "LAKEHOUSED_CONFIG"
"""Environment variable naming the config file when no path is given."""
DB_FILENAME = "lakehoused.db"
"""The SQLite file (event log and projection) inside ``state.path``."""

MODES = ("replace", "append")
"""Values of ``datasets.<name>.mode``."""
SCHEMA_CHANGES = ("reject", "add_columns", "overwrite")
"""Values of ``datasets.<name>.on_schema_change``."""
BAD_ROWS = ("reject", "quarantine")
"""Values of ``datasets.<name>.on_bad_rows``."""
AFTER_INGEST = ("archive", "delete", "keep")
"""Values of ``inbox.after_ingest``."""
LOG_LEVELS = ("debug", "info", "warning", "error")
"""Values of ``server.log_level``."""

# Relative to the config file's directory, as in the shipped config.toml.
_DEFAULT_PATHS = {"inbox": "inbox", "store": "var/objects", "state": "var/state"}
# Every key config.toml may hold, by section (the README documents each one).
KEYS: dict[str, tuple[str, ...]] = {
    "inbox": ("path", "url", "settle_ms", "rescan_s", "after_ingest"),
    "store": ("path", "url", "cache_size"),
    "state": ("path",),
    "s3": ("endpoint", "region", "secure", "access_key_env", "secret_key_env"),
    "server": (
        "host",
        "port",
        "max_rows",
        "query_timeout_s",
        "memory_limit",
        "memory_cache",
        "result_cache",
        "token_env",
        "log_level",
        "slow_query_ms",
    ),
    "retention": ("keep_versions", "keep_days"),
    "datasets": (),
}
DATASET_KEYS = (
    "mode",
    "on_schema_change",
    "null_values",
    "types",
    "encoding",
    "delimiter",
    "quote",
    "escape",
    "header",
    "skip_rows",
    "comment",
    "on_bad_rows",
    "converter_memory",
    "keep_versions",
    "keep_days",
)
# S3 bucket names (the common subset of AWS's and MinIO's rules).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class DatasetOptions:
    """Per-dataset overrides from ``[datasets.<name>]``; the defaults suit most CSV files."""

    mode: str | None = None  # "replace" | "append" | None = by location in the inbox
    on_schema_change: str = "reject"  # "reject" | "add_columns" | "overwrite"
    null_values: tuple[str, ...] = ()  # tokens read as NULL besides the empty cell
    types: Mapping[str, str] = field(default_factory=dict)  # column -> COLUMN_TYPES member
    encoding: str = "utf-8"  # any Python codec name; utf-8 also honours a UTF-16/32 BOM
    delimiter: str | None = None  # one character; None = sniffed (then by file suffix)
    quote: str = '"'  # one character; "" = no quoting (quote characters are literal)
    escape: str | None = None  # one character escaping the next; None = quotes are doubled
    header: bool | None = None  # None = a header row is expected; False = column_1..N
    skip_rows: int = 0  # lines above the header (a title, notes) to skip
    comment: str | None = None  # lines starting with this character are skipped
    on_bad_rows: str = "reject"  # "reject" the file | "quarantine" bad records, keep the rest
    converter_memory: str = "256MiB"  # the converter's memory budget for this dataset's files
    keep_versions: int | None = None  # retention; None = the [retention] default
    keep_days: float | None = None  # retention; None = the [retention] default


@dataclass(frozen=True)
class RetentionConfig:
    """How many versions, and how many days of them, a dataset keeps by default."""

    keep_versions: int | None = None  # None = every version
    keep_days: float | None = None  # None = however old


class Secret:
    """A credential read from the environment: equal by value, shown as ``(secret)`` by
    repr, str and format, so no message, log line or config diff can print it."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one client that signs requests with it."""
        return self._value

    def __repr__(self) -> str:
        return "(secret)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "(secret)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple:
        return (Secret, (self._value,))  # the config is pickled to converter processes


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach an S3 server (the ``[s3]`` section), with the keys it names read in."""

    endpoint: str = "s3.amazonaws.com"  # host or host:port, no scheme
    region: str | None = None  # None = ask the server (one request per bucket)
    secure: bool = True  # https
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    access_key: Secret = field(default_factory=Secret)
    secret_key: Secret = field(default_factory=Secret)


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix in it (``""`` or ending in ``/``), and how to reach them."""

    bucket: str = ""
    prefix: str = ""
    endpoint: S3Endpoint = field(default_factory=S3Endpoint)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix/``, for messages and events (never a secret)."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class InboxConfig:
    """Where files are dropped and how the watcher treats them."""

    path: Path | None  # a local directory; None when the inbox is a bucket prefix
    settle_ms: int = 250
    rescan_s: float = 30
    after_ingest: str = "archive"  # archive | delete | keep
    s3: S3Location | None = None  # the bucket prefix, when inbox.url is s3://


@dataclass(frozen=True)
class StoreConfig:
    """Where the content-addressed Parquet objects live: a directory or a bucket prefix."""

    path: Path | None  # a local directory; None when the store is a bucket prefix
    s3: S3Location | None = None  # the bucket prefix, when store.url is s3://
    cache_size: str = "4GB"  # the local read-through cache of a bucket store

    @property
    def cache_size_bytes(self) -> int:
        """cache_size in bytes."""
        return size_bytes(self.cache_size)


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
    log_level: str = "info"  # one of LOG_LEVELS; SIGHUP applies a change
    token: str | None = field(default=None, repr=False)
    slow_query_ms: int = 1000  # a query slower than this is logged; 0 = none

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
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    s3: S3Endpoint | None = None  # set when the inbox or the store is a bucket

    def dataset_options(self, name: str) -> DatasetOptions:
        """The options configured for dataset ``name``, or the defaults."""
        return self.datasets.get(name, DatasetOptions())

    def retention_for(self, name: str) -> RetentionConfig:
        """The retention of dataset ``name``: its own settings, else the [retention] ones."""
        options = self.dataset_options(name)
        return RetentionConfig(
            keep_versions=options.keep_versions
            if options.keep_versions is not None
            else self.retention.keep_versions,
            keep_days=options.keep_days
            if options.keep_days is not None
            else self.retention.keep_days,
        )

    @property
    def db_path(self) -> Path:
        """The SQLite file of the event log and projection."""
        return self.state.path / DB_FILENAME

    @property
    def staging_path(self) -> Path:
        """Where each ingest stages its source and writes its object (one workspace each)."""
        return self.state.path / "staging"

    @property
    def cache_path(self) -> Path:
        """The read-through cache of a bucket store's objects (what the query engine reads)."""
        return self.state.path / "cache"


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
    check.check_keys(doc, "", tuple(KEYS))
    sections = {name: check.table(doc.get(name, {}), name) for name in KEYS}
    for name, keys in KEYS.items():
        if name != "datasets":
            check.check_keys(sections[name], name, keys)

    inbox, store = sections["inbox"], sections["store"]
    inbox_path, inbox_bucket = _location(inbox, "inbox", base)
    store_path, store_bucket = _location(store, "store", base)
    # The keys are read only when a bucket is used; the section is checked either way.
    endpoint = _s3(sections["s3"], env if inbox_bucket or store_bucket else None)
    inbox_s3 = S3Location(*inbox_bucket, endpoint) if inbox_bucket and endpoint else None
    store_s3 = S3Location(*store_bucket, endpoint) if store_bucket and endpoint else None
    config = Config(
        path=file,
        inbox=InboxConfig(
            path=inbox_path,
            s3=inbox_s3,
            **check.options(
                inbox,
                "inbox",
                settle_ms=check.integer(0),
                rescan_s=check.number(lambda v: v >= 0, "a number >= 0 (0 = off)"),
                after_ingest=check.one_of(AFTER_INGEST),
            ),
        ),
        store=StoreConfig(
            store_path,
            store_s3,
            **check.options(store, "store", cache_size=check.memory_size(allow_zero=False)),
        ),
        state=StateConfig(_location(sections["state"], "state", base)[0]),
        server=_server(sections["server"], env),
        datasets=FrozenDict(
            {name: _dataset(raw, name) for name, raw in sections["datasets"].items()}
        ),
        retention=RetentionConfig(
            **check.options(sections["retention"], "retention", **check.RETENTION)
        ),
        s3=endpoint,
    )
    if config.inbox.path is not None:
        for section in ("store", "state"):
            path = getattr(config, section).path
            if path is not None:
                _not_inside_inbox(path, config.inbox.path, section)
    if inbox_s3 is not None and store_s3 is not None:
        _not_inside_inbox_prefix(store_s3, inbox_s3)
    return config


def _server(table: dict[str, Any], env: Mapping[str, str]) -> ServerConfig:
    opts = check.options(
        table,
        "server",
        host=check.string,
        port=check.integer(0, 65535),
        max_rows=check.integer(1),
        query_timeout_s=check.number(lambda v: v > 0, "a number > 0"),
        slow_query_ms=check.integer(0),
        memory_limit=check.memory_limit,
        memory_cache=check.memory_size(allow_zero=True),
        result_cache=check.memory_size(allow_zero=True),
        token_env=check.env_name,
        log_level=check.one_of(LOG_LEVELS),
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
    table = check.table(raw, key)
    check.check_keys(table, key, DATASET_KEYS)
    options = DatasetOptions(
        **check.options(
            table,
            key,
            mode=check.one_of(MODES),
            on_schema_change=check.one_of(SCHEMA_CHANGES),
            null_values=check.null_values,
            types=check.types,
            encoding=check.encoding,
            delimiter=check.delimiter,
            **check.RETENTION,
            quote=check.quote,
            escape=check.dialect_char("escape"),
            header=check.boolean,
            skip_rows=check.integer(0, 1_000_000),
            comment=check.dialect_char("comment"),
            on_bad_rows=check.one_of(BAD_ROWS),
            converter_memory=check.converter_memory,
        )
    )
    _distinct_dialect_chars(options, key)
    return options


def _distinct_dialect_chars(options: DatasetOptions, key: str) -> None:
    """The delimiter, quote, escape and comment characters must differ from each other."""
    chars = {
        "delimiter": options.delimiter,
        "quote": options.quote or None,
        # An escape equal to the quote is RFC 4180's doubled quote: the default.
        "escape": None if options.escape == options.quote else options.escape,
        "comment": options.comment,
    }
    seen: dict[str, str] = {}
    for name, char in chars.items():
        if char is None:
            continue
        if char in seen:
            raise ConfigError(
                f"{key}.{name}: {char!r} is already the {seen[char]}; "
                f"a character can have only one role"
            )
        seen[char] = name


def _location(
    table: dict[str, Any], section: str, base: Path
) -> tuple[Path | None, tuple[str, str] | None]:
    """``path`` or a ``file://`` ``url`` (absolute), or an ``s3://`` ``url`` (bucket, prefix)."""
    if "path" in table and "url" in table:
        raise ConfigError(f"{section}.url: give {section}.path or {section}.url, not both")
    if "url" in table:
        raw = check.string(table["url"], f"{section}.url")
        # Only the scheme and host are echoed: a URL may carry credentials.
        parts = urlsplit(raw)
        scheme = parts.scheme.lower()
        if scheme == "s3" and section != "state":
            return None, _s3_location(parts, section)
        if scheme != "file":
            got = f"scheme {scheme!r}" if scheme else "no scheme"
            allowed = "a file:// URL" if section == "state" else "a file:// or s3:// URL"
            raise ConfigError(
                f"{section}.url: must be {allowed}, got {got}; for a directory use {section}.path"
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
        rel = check.string(table.get("path", _DEFAULT_PATHS[section]), f"{section}.path")
    return _absolute(base / rel), None


def _s3_location(parts: Any, section: str) -> tuple[str, str]:
    """``s3://bucket/prefix/``: a bucket name and a clean key prefix ending in ``/``."""
    key = f"{section}.url"
    if "@" in parts.netloc:
        raise ConfigError(
            f"{key}: an s3:// URL must not carry credentials; name the environment "
            "variables that hold them in s3.access_key_env and s3.secret_key_env"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{key}: an s3:// URL takes no ?query or #fragment")
    bucket = parts.netloc
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{key}: {bucket!r} is not a bucket name (3-63 lower case letters, digits, "
            "dots and hyphens); write s3://bucket/prefix/"
        )
    prefix = unquote(parts.path).lstrip("/")
    segments = prefix.rstrip("/").split("/") if prefix else []
    if any(seg in ("", ".", "..") for seg in segments):
        raise ConfigError(
            f"{key}: the prefix {prefix!r} has an empty, '.' or '..' segment; "
            "write it like s3://bucket/some/prefix/"
        )
    return bucket, "".join(f"{seg}/" for seg in segments)


def _not_inside_inbox_prefix(store: S3Location, inbox: S3Location) -> None:
    """Refuse a store prefix the bucket inbox would list (and try to ingest)."""
    if store.bucket != inbox.bucket or not store.prefix.startswith(inbox.prefix):
        return
    rest = store.prefix[len(inbox.prefix) :]
    if not rest or not any(seg.startswith(".") for seg in rest.split("/") if seg):
        raise ConfigError(
            f"store.url: {store.url} is inside inbox.url {inbox.url}, so its objects would be "
            "ingested; give the store another prefix (or bucket)"
        )


def _s3(table: dict[str, Any], env: Mapping[str, str] | None) -> S3Endpoint | None:
    """The ``[s3]`` section, with the keys read from the environment or credential files.

    None when no bucket is used (``env`` is None): the section is only checked then.
    """
    opts = check.options(
        table,
        "s3",
        endpoint=check.endpoint,
        region=check.string,
        secure=check.boolean,
        access_key_env=check.env_name,
        secret_key_env=check.env_name,
    )
    if env is None:
        return None
    access_env = opts.get("access_key_env", S3Endpoint.access_key_env)
    secret_env = opts.get("secret_key_env", S3Endpoint.secret_key_env)
    return S3Endpoint(
        access_key=Secret(_read_secret(access_env, env, "s3.access_key_env", "the S3 access key")),
        secret_key=Secret(_read_secret(secret_env, env, "s3.secret_key_env", "the S3 secret key")),
        **opts,
    )


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
    return _read_secret(var, env, "server.token_env", "the API token")


def _read_secret(var: str, env: Mapping[str, str], key: str, what: str) -> str:
    """A secret from environment variable `var`, else from the systemd credential `var`.

    Messages name the variable and the file, never their content.
    """
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
                raise ConfigError(
                    f"{key}: cannot read credential file {cred}: {type(e).__name__}"
                ) from None
            if value:
                return value
    where = f" nor in the credential file {cred_dir}/{var}" if cred_dir else ""
    raise ConfigError(
        f"{key}: {what} is not set: environment variable {var} is missing or empty{where}"
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
