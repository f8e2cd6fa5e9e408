"""The bucket settings: s3:// URLs for the inbox and the store, the [s3] section, the keys."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from lakehoused.config import Config, S3Location, load_config
from lakehoused.errors import ConfigError

ACCESS = "AKIA-test-access-4242"
SECRET = "wJalr-test-secret-do-not-echo"
KEYS = {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}

Load = Callable[..., Config]


@pytest.fixture
def load(tmp_path: Path) -> Load:
    def _load(text: str = "", environ: Mapping[str, str] | None = None) -> Config:
        file = tmp_path / "config.toml"
        file.write_text(text, encoding="utf-8")
        return load_config(file, environ=KEYS if environ is None else environ)

    return _load


def error(load: Load, text: str, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(text, environ)
    message = str(info.value)
    assert ACCESS not in message and SECRET not in message
    return message


def test_a_bucket_inbox_and_store(load: Load, tmp_path: Path) -> None:
    config = load(
        '[inbox]\nurl = "s3://drop-zone/incoming/csv"\n'
        '[store]\nurl = "s3://lake.objects"\ncache_size = "1GiB"\n'
        '[s3]\nendpoint = "127.0.0.1:9000"\nsecure = false\nregion = "eu-west-1"\n'
    )
    assert config.inbox.path is None and config.store.path is None
    assert config.inbox.s3 is not None and config.store.s3 is not None
    assert (config.inbox.s3.bucket, config.inbox.s3.prefix) == ("drop-zone", "incoming/csv/")
    assert config.inbox.s3.url == "s3://drop-zone/incoming/csv/"
    assert (config.store.s3.bucket, config.store.s3.prefix) == ("lake.objects", "")
    assert config.store.cache_size_bytes == 1 << 30
    assert config.cache_path == tmp_path / "var" / "state" / "cache"
    endpoint = config.inbox.s3.endpoint
    assert endpoint is config.store.s3.endpoint is config.s3
    assert (endpoint.endpoint, endpoint.secure, endpoint.region) == (
        "127.0.0.1:9000",
        False,
        "eu-west-1",
    )
    assert (endpoint.access_key.reveal(), endpoint.secret_key.reveal()) == (ACCESS, SECRET)
    assert SECRET not in f"{endpoint!r} {endpoint.secret_key} {endpoint.secret_key:>40}"


def test_every_combination_of_directory_and_bucket(load: Load, tmp_path: Path) -> None:
    local_store = load('[inbox]\nurl = "s3://drop/in/"')
    assert local_store.store.path == tmp_path / "var" / "objects" and local_store.inbox.s3
    local_inbox = load('[store]\nurl = "s3://lake/objects/"')
    assert local_inbox.inbox.path == tmp_path / "inbox" and local_inbox.store.s3
    same_bucket = load('[inbox]\nurl = "s3://one/in/"\n[store]\nurl = "s3://one/lake/"')
    assert same_bucket.store.s3 and same_bucket.store.s3.bucket == "one"
    hidden = load('[inbox]\nurl = "s3://one/in/"\n[store]\nurl = "s3://one/in/.lake/"')
    assert hidden.store.s3 and hidden.store.s3.prefix == "in/.lake/"


def test_the_keys_never_show_and_the_config_still_pickles(load: Load) -> None:
    config = load('[inbox]\nurl = "s3://drop/in/"\n[store]\nurl = "s3://lake/x/"')
    assert ACCESS not in repr(config) and SECRET not in repr(config)
    assert pickle.loads(pickle.dumps(config)) == config  # handed to converter processes


def test_keys_from_systemd_credentials(load: Load, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "LAKE_ACCESS").write_text(ACCESS + "\n")
    (creds / "LAKE_SECRET").write_text(SECRET + "\n")
    config = load(
        '[inbox]\nurl = "s3://drop/in/"\n'
        '[s3]\naccess_key_env = "LAKE_ACCESS"\nsecret_key_env = "LAKE_SECRET"\n',
        {"CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert config.s3 is not None
    assert (config.s3.access_key.reveal(), config.s3.secret_key.reveal()) == (ACCESS, SECRET)


def test_a_missing_key_names_the_variable_and_the_credential_file(load: Load, tmp_path) -> None:
    message = error(load, '[inbox]\nurl = "s3://drop/in/"', {"AWS_ACCESS_KEY_ID": ACCESS})
    assert message == (
        "s3.secret_key_env: the S3 secret key is not set: environment variable "
        "AWS_SECRET_ACCESS_KEY is missing or empty"
    )
    message = error(
        load,
        '[store]\nurl = "s3://lake/"\n[s3]\naccess_key_env = "MY_KEY"',
        {"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert message.startswith("s3.access_key_env: the S3 access key is not set")
    assert f"nor in the credential file {tmp_path}/MY_KEY" in message


def test_no_bucket_needs_no_keys(load: Load) -> None:
    config = load('[s3]\nendpoint = "minio.internal:9000"', {})
    assert config.s3 is None and config.inbox.s3 is None and config.store.s3 is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[inbox]\nurl = "s3://Bad_Bucket/x/"', "inbox.url: 'Bad_Bucket' is not a bucket name"),
        ('[store]\nurl = "s3://ok-bucket/a//b/"', "store.url: the prefix 'a//b/' has an empty"),
        ('[store]\nurl = "s3://ok-bucket/a/../b"', "store.url: the prefix 'a/../b' has an empty"),
        ('[inbox]\nurl = "s3://ok-bucket/x?versionId=1"', "inbox.url: an s3:// URL takes no"),
        (
            '[inbox]\nurl = "s3://one/in/"\n[store]\nurl = "s3://one/in/lake/"',
            "store.url: s3://one/in/lake/ is inside inbox.url s3://one/in/",
        ),
        (
            '[inbox]\nurl = "s3://one"\n[store]\nurl = "s3://one"',
            "store.url: s3://one/ is inside inbox.url s3://one/",
        ),
        (
            '[store]\nurl = "s3://xy1/"\n[s3]\nendpoint = "http://127.0.0.1:9000"',
            "s3.endpoint: give",
        ),
        (
            '[store]\nurl = "s3://xy1/"\n[s3]\nendpoint = "h:99999"',
            "s3.endpoint: must be host:port",
        ),
        ('[store]\nurl = "s3://xy1/"\n[s3]\nendpoint = "a b"', "s3.endpoint: must be host or"),
        ('[store]\nurl = "s3://xy1/"\n[s3]\nsecure = "no"', "s3.secure: must be true or false"),
        ('[store]\nurl = "s3://xy1/"\n[s3]\nendpont = "x"', "s3.endpont: unknown key; did you"),
        ('[store]\nurl = "s3://xy1/"\n[s3]\naccess_key_env = "A-B"', "s3.access_key_env: must"),
        ("[s3]\nsecure = 1", "s3.secure: must be true or false"),
        ('[store]\ncache_size = "lots"', "store.cache_size: must be a size"),
        ('[store]\ncache_size = "0MB"', "store.cache_size: must be a size"),
        ('[state]\nurl = "s3://xy1/state/"', "state.url: unknown key"),
    ],
)
def test_bad_bucket_settings_name_the_key(load: Load, text: str, message: str) -> None:
    assert error(load, text).startswith(message)


def test_the_location_has_the_url_users_wrote(load: Load) -> None:
    config = load('[inbox]\nurl = "s3://drop/a/b"')
    assert isinstance(config.inbox.s3, S3Location)
    assert config.inbox.s3.url == "s3://drop/a/b/"


def test_a_reload_with_new_keys_says_what_waits_and_never_the_keys(load: Load) -> None:
    from lakehoused.reload import plan

    text = '[inbox]\nurl = "s3://drop/in/"\n[store]\nurl = "s3://lake/x/"\n'
    running = load(text)
    rotated = load(
        text.replace("s3://lake/x/", "s3://lake/y/"), {**KEYS, "AWS_SECRET_ACCESS_KEY": "n3w"}
    )
    change = plan(running, rotated)
    described = [c.describe() for c in change.needs_restart]
    assert [d.split(":")[0] for d in described] == [
        "inbox.s3",
        "store.s3",
        "s3.secret_key_env (the key's value) changed",  # said, never shown
    ]
    assert 'prefix = "y/"' in described[1]
    for text in described:
        assert SECRET not in text and "n3w" not in text and ACCESS not in text
