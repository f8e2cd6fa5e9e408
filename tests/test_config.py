"""config.toml parsing and validation, on real files under tmp_path."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from lakehoused.config import (
    Config,
    DatasetOptions,
    InboxConfig,
    ServerConfig,
    default_config,
    load_config,
)
from lakehoused.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-v4lue-do-not-echo"

Load = Callable[..., Config]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    """Write ``text`` as tmp_path/config.toml and load it with a controlled environment."""

    def _load(text: str = "", environ: Mapping[str, str] | None = None) -> Config:
        file = tmp_path / "config.toml"
        file.write_text(text, encoding="utf-8")
        return load_config(file, environ={} if environ is None else environ)

    return _load


def error(load: Load, text: str, environ: Mapping[str, str] | None = None) -> str:
    """The message of the ConfigError loading ``text`` raises."""
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    return str(info.value)


# -- which file, and defaults --------------------------------------------------------------


def test_empty_file_gives_defaults_relative_to_the_file(tmp_path: Path, load: Load) -> None:
    config = load("")
    assert config.path == tmp_path / "config.toml"
    assert config == dataclasses.replace(default_config(tmp_path), path=config.path)
    assert config.inbox == InboxConfig(tmp_path / "inbox", 250, 30, "archive")
    assert config.store.path == tmp_path / "var" / "objects"
    assert config.state.path == tmp_path / "var" / "state"
    assert config.db_path == tmp_path / "var" / "state" / "lakehoused.db"
    assert config.server == ServerConfig()
    assert dict(config.datasets) == {}


def test_default_config(tmp_path: Path) -> None:
    config = default_config(tmp_path)
    assert config.path is None
    assert config.inbox.path == tmp_path / "inbox"
    assert config.db_path == tmp_path / "var/state/lakehoused.db"
    assert config.dataset_options("anything") == DatasetOptions()


def test_the_shipped_config_toml_is_valid() -> None:
    config = load_config(REPO_ROOT / "config.toml", environ={})
    assert config.inbox.path == REPO_ROOT / "inbox"
    assert config.server.port == 8765


def test_full_file(tmp_path: Path, load: Load) -> None:
    config = load(
        """
        [inbox]
        path = "drop"
        settle_ms = 0
        rescan_s = 0.5
        after_ingest = "keep"

        [store]
        path = "/srv/objects"

        [state]
        path = "../state"

        [server]
        host = "::1"
        port = 0
        max_rows = 1
        query_timeout_s = 2.5
        memory_limit = "1.5GiB"

        [datasets.workers]
        mode = "append"
        on_schema_change = "add_columns"
        null_values = ["N/A", "-"]
        types = { zip = "varchar", born = "DATE" }
        encoding = "Latin-1"
        delimiter = ";"
        """
    )
    assert config.inbox == InboxConfig(tmp_path / "drop", 0, 0.5, "keep")
    assert config.store.path == Path("/srv/objects")
    assert config.state.path == tmp_path.parent / "state"  # ".." resolved, still absolute
    assert config.server == ServerConfig("::1", 0, 1, 2.5, "1.5GiB")
    workers = config.dataset_options("workers")
    assert workers == DatasetOptions(
        mode="append",
        on_schema_change="add_columns",
        null_values=("N/A", "-"),
        types={"zip": "VARCHAR", "born": "DATE"},
        encoding="latin-1",
        delimiter=";",
    )
    assert config.dataset_options("other") == DatasetOptions()


def test_relative_paths_are_relative_to_the_config_file_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "lakehoused.toml").write_text('[inbox]\npath = "in"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../etc/lakehoused.toml", environ={})
    assert config.path == conf_dir / "lakehoused.toml"
    assert config.inbox.path == conf_dir / "in"
    assert config.inbox.path.is_absolute()


def test_lakehoused_config_env_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "from-env.toml"
    file.write_text("[server]\nport = 9000\n")
    assert load_config(environ={"LAKEHOUSED_CONFIG": str(file)}).server.port == 9000


def test_explicit_path_beats_lakehoused_config(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[server]\nport = 1\n")
    environ = {"LAKEHOUSED_CONFIG": str(tmp_path / "missing.toml")}
    assert load_config(tmp_path / "a.toml", environ=environ).server.port == 1


def test_config_toml_in_the_cwd_is_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.toml").write_text("[server]\nport = 2\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.path == tmp_path / "config.toml"
    assert config.server.port == 2


def test_os_environ_is_the_default_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "c.toml").write_text("[server]\nport = 3\n")
    monkeypatch.setenv("LAKEHOUSED_CONFIG", str(tmp_path / "c.toml"))
    assert load_config().server.port == 3


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"config file {tmp_path / 'nope.toml'}")):
        load_config(tmp_path / "nope.toml", environ={})


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    # A directory cannot be read as a file, whoever runs the test (root ignores chmod).
    with pytest.raises(ConfigError, match=re.escape(f"read config file {tmp_path}:")):
        load_config(tmp_path, environ={})


def test_toml_syntax_error_names_the_file_and_line(tmp_path: Path, load: Load) -> None:
    message = error(load, "[server]\nport = = 1\n")
    assert message.startswith(f"read config file {tmp_path / 'config.toml'}: invalid TOML")
    assert "line 2" in message


def test_non_utf8_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_bytes(b'[server]\nhost = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "c.toml", environ={})


# -- unknown keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[inbox]\nsetle_ms = 1", "inbox.setle_ms: unknown key; did you mean inbox.settle_ms?"),
        ("[servre]\nport = 1", "servre: unknown key; did you mean server?"),
        ("[server]\nworkers = 4", "server.workers: unknown key"),
        ("[state]\nurl = 'file:///x'", "state.url: unknown key"),
        (
            "[datasets.w]\nmodes = 'append'",
            "datasets.w.modes: unknown key; did you mean datasets.w.mode?",
        ),
        ("colour = 'blue'", "colour: unknown key"),
    ],
)
def test_unknown_keys_are_named(load: Load, text: str, message: str) -> None:
    assert error(load, text) == message


# -- bad values: the dotted key and the value ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nport = 70000", "server.port: must be 0-65535, got 70000"),
        ("[server]\nport = -1", "server.port: must be 0-65535, got -1"),
        ("[server]\nport = '80'", "server.port: must be 0-65535, got '80'"),
        ("[server]\nport = true", "server.port: must be 0-65535, got true"),
        ("[server]\nport = 80.0", "server.port: must be 0-65535, got 80.0"),
        ("[server]\nmax_rows = 0", "server.max_rows: must be an integer >= 1, got 0"),
        ("[server]\nquery_timeout_s = 0", "server.query_timeout_s: must be a number > 0, got 0"),
        (
            "[server]\nquery_timeout_s = inf",
            "server.query_timeout_s: must be a number > 0, got inf",
        ),
        (
            "[server]\nquery_timeout_s = false",
            "server.query_timeout_s: must be a number > 0, got false",
        ),
        ("[server]\nhost = ''", "server.host: must be a non-empty string, got ''"),
        ("[server]\nhost = 127", "server.host: must be a non-empty string, got 127"),
        ("[inbox]\nsettle_ms = -1", "inbox.settle_ms: must be an integer >= 0, got -1"),
        ("[inbox]\nsettle_ms = 2.5", "inbox.settle_ms: must be an integer >= 0, got 2.5"),
        ("[inbox]\nrescan_s = -0.1", "inbox.rescan_s: must be a number >= 0 (0 = off), got -0.1"),
        ("[inbox]\nrescan_s = '30'", "inbox.rescan_s: must be a number >= 0 (0 = off), got '30'"),
        (
            "[inbox]\nafter_ingest = 'move'",
            "inbox.after_ingest: must be one of archive, delete, keep, got 'move'",
        ),
        ("[inbox]\npath = ''", "inbox.path: must be a non-empty string, got ''"),
        ("[store]\npath = ['a']", "store.path: must be a non-empty string, got ['a']"),
        ("inbox = 'inbox'", "inbox: must be a table, got 'inbox'"),
        ("datasets = 1", "datasets: must be a table, got 1"),
        ("[datasets]\nw = 1", "datasets.w: must be a table, got 1"),
        (
            "[datasets.w]\nmode = 'upsert'",
            "datasets.w.mode: must be one of replace, append, got 'upsert'",
        ),
        (
            "[datasets.w]\non_schema_change = 'merge'",
            "datasets.w.on_schema_change: must be one of reject, add_columns, overwrite, got 'merge'",
        ),
        (
            "[datasets.workers]\ntypes = { zip = 'TEXT' }",
            "datasets.workers.types.zip: must be one of BOOLEAN, BIGINT, DOUBLE, DATE, "
            "TIMESTAMP, VARCHAR, got 'TEXT'",
        ),
        (
            "[datasets.w]\ntypes = { n = 1 }",
            "datasets.w.types.n: must be one of BOOLEAN, BIGINT, DOUBLE, DATE, TIMESTAMP, "
            "VARCHAR, got 1",
        ),
        ("[datasets.w]\ntypes = 'VARCHAR'", "datasets.w.types: must be a table, got 'VARCHAR'"),
        (
            "[datasets.w]\nnull_values = 'N/A'",
            "datasets.w.null_values: must be a list of non-empty strings, got 'N/A'",
        ),
        (
            "[datasets.w]\nnull_values = ['N/A', '']",
            "datasets.w.null_values[1]: must be a non-empty string, got ''",
        ),
        (
            "[datasets.w]\nnull_values = [0]",
            "datasets.w.null_values[0]: must be a non-empty string, got 0",
        ),
        (
            "[datasets.w]\nencoding = 'klingon'",
            "datasets.w.encoding: must be a Python codec name such as utf-8, cp1252, shift_jis "
            "or utf-16-le, got 'klingon'",
        ),
        (
            "[datasets.w]\ndelimiter = ';;'",
            "datasets.w.delimiter: must be exactly one character (not a quote or line break), "
            "got ';;'",
        ),
        (
            "[datasets.w]\ndelimiter = ''",
            "datasets.w.delimiter: must be exactly one character (not a quote or line break), "
            "got ''",
        ),
        (
            "[datasets.w]\ndelimiter = '\"'",
            "datasets.w.delimiter: must be exactly one character (not a quote or line break), "
            "got '\"'",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_value(load: Load, text: str, message: str) -> None:
    assert error(load, text) == message


@pytest.mark.parametrize("limit", ["2GB", "512MB", "1.5GiB", "100B", "1TB", "64KiB", "3 GB", "2gb"])
def test_memory_limit_accepted(load: Load, limit: str) -> None:
    assert load(f"[server]\nmemory_limit = '{limit}'").server.memory_limit == limit


@pytest.mark.parametrize("limit", ["2", "GB", "2 G", "0GB", "-1GB", "1.GB", "2PB", "lots"])
def test_memory_limit_refused(load: Load, limit: str) -> None:
    assert error(load, f"[server]\nmemory_limit = '{limit}'") == (
        f'server.memory_limit: must be a size like "2GB", "512MB" or "1.5GiB", got \'{limit}\''
    )


def test_memory_limit_must_be_a_string(load: Load) -> None:
    assert "got 2" in error(load, "[server]\nmemory_limit = 2")


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1", "utf-16", "UTF-8"])
def test_encodings(load: Load, encoding: str) -> None:
    config = load(f"[datasets.w]\nencoding = '{encoding}'")
    assert config.dataset_options("w").encoding == encoding.lower()


def test_tab_delimiter(load: Load) -> None:
    assert load('[datasets.w]\ndelimiter = "\\t"').dataset_options("w").delimiter == "\t"


def test_dataset_options_are_read_only(load: Load) -> None:
    config = load("[datasets.w]\ntypes = { a = 'BIGINT' }")
    with pytest.raises(TypeError):
        config.datasets["x"] = DatasetOptions()  # type: ignore[index]
    with pytest.raises(TypeError):
        config.dataset_options("w").types["a"] = "VARCHAR"  # type: ignore[index]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "Bad-Name",
            "datasets.Bad-Name: not a valid dataset name; use lower case letters, digits and _"
            "; did you mean datasets.bad_name?",
        ),
        (
            "1st",
            "datasets.1st: not a valid dataset name; use lower case letters, digits and _"
            "; did you mean datasets._1st?",
        ),
        (
            "x" * 64,
            f"datasets.{'x' * 64}: not a valid dataset name; use lower case letters, digits and _",
        ),
    ],
)
def test_dataset_section_names_must_be_dataset_names(load: Load, name: str, message: str) -> None:
    assert error(load, f'[datasets."{name}"]\nmode = "append"') == message


# -- path and url ----------------------------------------------------------------------------


def test_file_url_works_like_a_path(tmp_path: Path, load: Load) -> None:
    config = load(
        f"""
        [inbox]
        url = "file://{tmp_path}/drop%20zone"
        [store]
        url = "file://localhost/srv/objects"
        """
    )
    assert config.inbox.path == tmp_path / "drop zone"
    assert config.store.path == Path("/srv/objects")


def test_relative_file_url_is_relative_to_the_config_file(tmp_path: Path, load: Load) -> None:
    assert load('[inbox]\nurl = "file:in"').inbox.path == tmp_path / "in"


@pytest.mark.parametrize("section", ["inbox", "store"])
def test_s3_url_with_credentials_is_refused_without_echoing_them(load: Load, section: str) -> None:
    message = error(load, f'[{section}]\nurl = "s3://AKIA:{SECRET}@bucket/prefix/"')
    assert message.startswith(f"{section}.url: an s3:// URL must not carry credentials")
    assert SECRET not in message
    assert "AKIA" not in message


def test_other_url_schemes_are_refused_without_echoing_the_url(load: Load) -> None:
    message = error(load, f'[store]\nurl = "https://user:{SECRET}@example.com/x"')
    assert message == (
        "store.url: must be a file:// or s3:// URL, got scheme 'https'; "
        "for a directory use store.path"
    )
    assert "got no scheme" in error(load, '[store]\nurl = "objects"')


def test_file_url_with_a_remote_host_is_refused(load: Load) -> None:
    assert "got host 'nas'" in error(load, '[inbox]\nurl = "file://nas/share"')


def test_path_and_url_together_are_an_error(load: Load) -> None:
    assert error(load, '[inbox]\npath = "a"\nurl = "file:///b"') == (
        "inbox.url: give inbox.path or inbox.url, not both"
    )


@pytest.mark.parametrize("section", ["store", "state"])
def test_store_and_state_must_not_be_inside_the_inbox(load: Load, section: str) -> None:
    other = {"store": "state", "state": "store"}[section]
    text = f'[inbox]\npath = "."\n[{section}]\npath = "var/x"\n[{other}]\npath = "../x"'
    message = error(load, text)
    assert message.startswith(f"{section}.path: ")
    assert "inside inbox.path" in message


def test_a_dot_folder_of_the_inbox_is_not_watched(tmp_path: Path, load: Load) -> None:
    config = load('[inbox]\npath = "."\n[store]\npath = ".objects"\n[state]\npath = ".state"')
    assert config.store.path == tmp_path / ".objects"


# -- the API token -----------------------------------------------------------------------------


def test_no_token_on_loopback(load: Load) -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost", "LOCALHOST"):
        config = load(f'[server]\nhost = "{host}"')
        assert config.server.token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_non_loopback_requires_a_token(load: Load, host: str) -> None:
    assert error(load, f'[server]\nhost = "{host}"') == (
        f"server.host: binding {host} (not loopback) requires an API token; set server.token_env"
    )


def test_token_from_the_environment(load: Load) -> None:
    config = load(
        '[server]\nhost = "0.0.0.0"\ntoken_env = "LH_TOKEN"', environ={"LH_TOKEN": SECRET}
    )
    assert config.server.token == SECRET
    assert config.server.token_env == "LH_TOKEN"
    # repr goes to logs and tracebacks: the token must not.
    assert SECRET not in repr(config)


def test_token_from_a_systemd_credential(tmp_path: Path, load: Load) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "LH_TOKEN").write_text(SECRET + "\n")
    config = load(
        '[server]\nhost = "0.0.0.0"\ntoken_env = "LH_TOKEN"',
        environ={"CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert config.server.token == SECRET


def test_environment_wins_over_the_credential_file(tmp_path: Path, load: Load) -> None:
    (tmp_path / "LH_TOKEN").write_text("from-file")
    config = load(
        '[server]\ntoken_env = "LH_TOKEN"',
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path), "LH_TOKEN": "from-env"},
    )
    assert config.server.token == "from-env"


def test_missing_token_names_the_variable(tmp_path: Path, load: Load) -> None:
    message = error(load, '[server]\ntoken_env = "LH_TOKEN"', environ={"OTHER": SECRET})
    assert message.startswith("server.token_env: the API token is not set")
    assert "environment variable LH_TOKEN" in message
    assert SECRET not in message
    message = error(
        load,
        '[server]\ntoken_env = "LH_TOKEN"',
        environ={"LH_TOKEN": "", "CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert f"{tmp_path}/LH_TOKEN" in message


@pytest.mark.parametrize("token_env", [SECRET, "../etc/passwd", ""])
def test_token_env_must_be_a_variable_name_and_is_never_echoed(load: Load, token_env: str) -> None:
    # Someone may paste the token itself here by mistake.
    message = error(load, f'[server]\ntoken_env = "{token_env}"')
    assert message == (
        "server.token_env: must be the name of an environment variable (letters, digits, _), "
        "got a string (value not shown)"
    )


@pytest.mark.parametrize(
    "text",
    [
        f'[server]\ntoken = "{SECRET}"',
        f'token = "{SECRET}"',
        f'[store]\nsecret_key = "{SECRET}"',
        f'[store]\naccess_key = "{SECRET}"',
        f'[server]\npassword = "{SECRET}"',
        f'[datasets.w]\ntypes = {{ api_key = "{SECRET}" }}',
        f'[datasets.w]\ntypes = {{ password = ["{SECRET}"] }}',
        f'[server]\ntoken_env = ["{SECRET}"]',
        f'[inbox]\nurl = "s3://{SECRET}@b/p"',
        f'[store]\nurl = "file://{SECRET}@host/p"',
    ],
)
def test_no_message_echoes_a_secret_like_value(load: Load, text: str) -> None:
    message = error(load, text)
    assert SECRET not in message
    assert "s3cr3t" not in message


def test_secret_like_unknown_key_is_named_without_its_value(load: Load) -> None:
    assert error(load, f'[server]\ntoken = "{SECRET}"') == (
        "server.token: unknown key; did you mean server.token_env?"
    )
