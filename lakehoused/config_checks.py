"""Small checkers for config.toml values: each takes (value, dotted key) and returns the value
or raises ConfigError naming the key, the expected form and the bad value (never a secret's)."""

from __future__ import annotations

import codecs
import difflib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from lakehoused.errors import ConfigError


class FrozenDict(dict):
    """A dict that cannot change after it is made, and that pickles (to converter processes)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("settings cannot change once loaded")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple:
        return (FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


COLUMN_TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
"""Column types ``datasets.<name>.types`` may force (stored upper-case)."""
_ENDPOINT_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
_MEMORY_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A key named like one of these may hold a secret, so its value never appears in a message.
SECRET_LIKE = re.compile(r"token|secret|passw|key|credential|auth", re.IGNORECASE)


Check = Callable[[Any, str], Any]


def bad(key: str, expected: str, value: Any) -> ConfigError:
    """``<key>: must be <expected>, got <value>``; the value withheld for a secret-like key."""
    leaf = key.rsplit(".", 1)[-1]
    if SECRET_LIKE.search(leaf):
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


def check_keys(table: dict[str, Any], prefix: str, allowed: tuple[str, ...]) -> None:
    dot = f"{prefix}." if prefix else ""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {dot}{close[0]}?" if close else ""
            raise ConfigError(f"{dot}{key}: unknown key{hint}")


def table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(key, "a table", value)
    return value


def options(table: dict[str, Any], section: str, **checks: Check) -> dict[str, Any]:
    """The keys present in ``table`` that have a check, checked; absent keys keep defaults."""
    return {
        name: check(table[name], f"{section}.{name}")
        for name, check in checks.items()
        if name in table
    }


def string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad(key, "a non-empty string", value)
    return value


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise bad(key, "true or false", value)
    return value


def endpoint(value: Any, key: str) -> str:
    if isinstance(value, str) and "://" in value:
        raise ConfigError(
            f"{key}: give host:port without a scheme (got a URL); "
            "s3.secure = false selects http instead of https"
        )
    if not isinstance(value, str) or not _ENDPOINT_RE.match(value):
        raise bad(key, "host or host:port, like 127.0.0.1:9000 or s3.amazonaws.com", value)
    port = value.rsplit(":", 1)[1] if ":" in value and not value.endswith("]") else None
    if port is not None and not 0 < int(port) < 65536:
        raise bad(key, "host:port with a port of 1-65535", value)
    return value


def integer(lo: int, hi: int | None = None) -> Check:
    expected = f"an integer >= {lo}" if hi is None else f"{lo}-{hi}"

    def check(value: Any, key: str) -> int:
        # bool is an int subclass in Python, but "port = true" is a mistake.
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < lo
            or (hi is not None and value > hi)
        ):
            raise bad(key, expected, value)
        return value

    return check


def number(ok: Callable[[float], bool], expected: str) -> Check:
    def check(value: Any, key: str) -> float:
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not ok(value)
        ):
            raise bad(key, expected, value)
        return value

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or value not in choices:
            raise bad(key, f"one of {', '.join(choices)}", value)
        return value

    return check


def memory_limit(value: Any, key: str) -> str:
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise bad(key, 'a size like "2GB", "512MB" or "1.5GiB"', value)
    return value


def memory_size(*, allow_zero: bool) -> Check:
    def check(value: Any, key: str) -> str:
        match = _MEMORY_RE.match(value) if isinstance(value, str) else None
        if (
            match is None
            or float(match.group(1)) < 0
            or (not allow_zero and not float(match.group(1)))
        ):
            examples = '"512MB", "1GiB" or "0MB"' if allow_zero else '"512MB" or "20GiB"'
            raise bad(key, f"a size like {examples}", value)
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


def env_name(value: Any, key: str) -> str:
    # Also used as a file name under $CREDENTIALS_DIRECTORY, so no "/" or "..".
    if not isinstance(value, str) or not _ENV_NAME_RE.match(value):
        raise bad(key, "the name of an environment variable (letters, digits, _)", value)
    return value


def null_values(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise bad(key, "a list of non-empty strings", value)
    return tuple(string(item, f"{key}[{i}]") for i, item in enumerate(value))


def types(value: Any, key: str) -> Mapping[str, str]:
    hints = {}
    for column, name in table(value, key).items():
        if not isinstance(name, str) or name.upper() not in COLUMN_TYPES:
            raise bad(f"{key}.{column}", f"one of {', '.join(COLUMN_TYPES)}", name)
        hints[column] = name.upper()
    return FrozenDict(hints)


def encoding(value: Any, key: str) -> str:
    expected = "a Python codec name such as utf-8, cp1252, shift_jis or utf-16-le"
    if not isinstance(value, str) or not value:
        raise bad(key, expected, value)
    try:
        codecs.lookup(value)
    except LookupError:
        raise bad(key, expected, value) from None
    # Text codecs only: "rot13" or "base64" would name no character set.
    if not codecs.lookup(value)._is_text_encoding:  # type: ignore[attr-defined]
        raise bad(key, expected, value)
    return value.lower()


# Characters that can never be part of a dialect: they end records.
_LINE_BREAKS = "\r\n"


def quote(value: Any, key: str) -> str:
    if not isinstance(value, str) or len(value) > 1 or (value and value in _LINE_BREAKS):
        raise bad(key, 'one character, or "" for no quoting', value)
    return ascii(value, key)


def dialect_char(name: str) -> Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str) or len(value) != 1 or value in _LINE_BREAKS:
            raise bad(key, "exactly one character (not a line break)", value)
        return ascii(value, key)

    return check


def converter_memory(value: Any, key: str) -> str:
    match = _MEMORY_RE.match(value) if isinstance(value, str) else None
    if match is None or size_bytes(value) < 64 * 2**20:
        raise bad(key, 'a size of at least 64MiB, like "256MB" or "1GiB"', value)
    return value


def delimiter(value: Any, key: str) -> str:
    # A quote or line break as delimiter would make every row ambiguous.
    if not isinstance(value, str) or len(value) != 1 or value in '"\r\n':
        raise bad(key, "exactly one character (not a quote or line break)", value)
    return ascii(value, key)


def ascii(value: str, key: str) -> str:
    # The CSV grammar is checked byte by byte: a dialect character must be one byte.
    if not value.isascii():
        raise bad(key, "an ASCII character", value)
    return value


RETENTION: dict[str, Check] = {
    "keep_versions": integer(1),
    "keep_days": number(lambda v: v > 0, "a number of days > 0"),
}
