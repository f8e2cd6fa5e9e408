"""Time travel: `as_of` (HTTP and CLI) and `"name@N"`, across rollbacks, drops and retention."""

from __future__ import annotations

import asyncio
import json

import pytest

from lakehoused import lifecycle, operations
from lakehoused.cli import main
from lakehoused.config import load_config
from lakehoused.daemon import build_app
from lakehoused.lakehouse import Lakehouse


@pytest.fixture
async def api(aiohttp_client, make_config, tmp_path):
    """The real daemon's app; `api.drop(relpath, text)` waits until its event is in view."""
    config = load_config(make_config(datasets="[datasets.w]\nkeep_versions = 3"))
    client = await aiohttp_client(build_app(config))

    async def drop(relpath: str, text: str) -> int:
        before = (await (await client.get("/health")).json())["catalog_seq"]
        staging = tmp_path / "staging.tmp"
        staging.write_text(text, encoding="utf-8")
        staging.rename(config.inbox.path / relpath)
        for _ in range(400):
            seq = (await (await client.get("/health")).json())["catalog_seq"]
            if seq > before:
                return seq
            await asyncio.sleep(0.05)
        raise AssertionError(f"{relpath} was not ingested")

    async def command(*args: str) -> int:
        """A person's command beside the daemon; returns the seq the views reach after it."""
        code = await asyncio.to_thread(main, [*args, "--config", str(config.path)])
        assert code == 0
        with Lakehouse(config, read_only=True) as lakehouse:
            seq = lakehouse.log.last_seq
        for _ in range(100):
            if (await (await client.get("/health")).json())["catalog_seq"] >= seq:
                return seq
            await asyncio.sleep(0.05)
        raise AssertionError("the views never followed the command")

    client.drop = drop
    client.command = command
    client.config = config
    return client


async def rows(api, sql: str, **body) -> tuple[int, object, object]:
    response = await api.post("/sql", json={"sql": sql, **body})
    return response.status, await response.json(), response.headers


async def test_as_of_sees_each_state_across_a_rollback(api):
    v1 = await api.drop("w.csv", "n\n1\n")
    v2 = await api.drop("w.csv", "n\n2\n")
    v3 = await api.command("rollback", "w", "--to", "1", "--reason", "v2 was wrong")
    for seq, expected in ((v1, [[1]]), (v2, [[2]]), (v3, [[1]])):
        status, body, headers = await rows(api, "SELECT n FROM w", as_of=seq)
        assert status == 200, body
        assert (body["rows"], body["catalog_seq"]) == (expected, seq)
        assert headers["X-Catalog-Seq"] == str(seq)
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert headers["ETag"]
    status, body, headers = await rows(api, "SELECT n FROM w")
    assert body["rows"] == [[1]] and headers["Cache-Control"] == "no-cache"
    # The same question about the past, asked again with its ETag: 304, still immutable.
    status, body, first = await rows(api, "SELECT n FROM w", as_of=v2)
    assert "ETag" in first, (status, body, first)
    again = await api.post(
        "/sql",
        json={"sql": "SELECT n FROM w", "as_of": v2},
        headers={"If-None-Match": first["ETag"]},
    )
    assert again.status == 304 and again.headers["Cache-Control"].endswith("immutable")
    # GET, and the streamed formats, take it too.
    response = await api.get(
        "/sql", params={"q": "SELECT n FROM w", "as_of": str(v2), "format": "csv"}
    )
    assert (await response.text()).split() == ['"n"', "2"]


async def test_a_version_by_name_beside_the_current_one(api):
    await api.drop("w.csv", "n\n1\n2\n")
    await api.drop("w.csv", "n\n2\n3\n")
    status, body, _ = await rows(api, 'SELECT n FROM "w@1" EXCEPT SELECT n FROM w ORDER BY n')
    assert (status, body["rows"]) == (200, [[1]])
    status, body, _ = await rows(api, 'SELECT count(*) FROM "w@9"')
    assert status == 404 and "no version 9 of dataset 'w'" in body["error"]["message"]


async def test_a_dropped_dataset_is_gone_now_and_there_before(api):
    before = await api.drop("gone.csv", "n\n7\n")
    await api.command("drop", "gone", "--reason", "not needed")
    status, body, _ = await rows(api, "SELECT n FROM gone")
    assert status == 400 and "gone" in body["error"]["message"]
    status, body, _ = await rows(api, "SELECT n FROM gone", as_of=before)
    assert (status, body["rows"]) == (200, [[7]])


async def test_expired_versions_answer_410_with_the_reason(api):
    first = await api.drop("w.csv", "n\n1\n")
    for n in (2, 3, 4):
        await api.drop("w.csv", f"n\n{n}\n")
    await asyncio.sleep(0.3)  # the expiry event follows the fourth registration
    with Lakehouse(api.config) as lakehouse:
        assert [v.version for v in lakehouse.catalog.versions("w") if v.expired] == [1]
        operations.gc(lakehouse, grace_s=0)  # its object is gone now
    status, body, _ = await rows(api, "SELECT n FROM w", as_of=first)
    assert status == 410 and body["error"]["code"] == "gone", body
    assert "version 1 of w was expired by retention" in body["error"]["message"]
    status, body, _ = await rows(api, 'SELECT n FROM "w@1"')
    assert status == 410
    # The other datasets of that state stay readable.
    status, body, _ = await rows(api, "SELECT 42 AS x", as_of=first)
    assert (status, body["rows"]) == (200, [[42]])


async def test_as_of_beyond_the_log_or_malformed_is_a_400_naming_it(api):
    await api.drop("w.csv", "n\n1\n")
    for value, words in ((99, "no event 99 yet"), (-1, "as_of"), ("x", "as_of")):
        status, body, _ = await rows(api, "SELECT 1", as_of=value)
        assert status == 400 and words in body["error"]["message"], body


def test_the_cli_travels_too(make_config, tmp_path, capsys):
    config = make_config()
    cfg = load_config(config)
    for text in ("n\n1\n", "n\n2\n"):
        path = tmp_path / "src" / "w.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        assert main(["ingest", str(path), "--config", str(config)]) == 0
    with Lakehouse(cfg) as lakehouse:
        lifecycle.rollback(lakehouse, "w", 1, "back")
    capsys.readouterr()

    def sql(*args: str) -> list:
        assert main(["sql", *args, "--format", "json", "--config", str(config)]) == 0
        return json.loads(capsys.readouterr().out)["rows"]

    assert sql("SELECT n FROM w", "--as-of", "2") == [[2]]
    assert sql("SELECT n FROM w") == [[1]]
    assert sql('SELECT n FROM "w@2"') == [[2]]
    assert main(["sql", "SELECT 1", "--as-of", "9", "--config", str(config)]) == 1
    assert "no event 9 yet" in capsys.readouterr().err
