"""The page's routes over HTTP (its behaviour in a browser is tests/test_page.py)."""

from __future__ import annotations

import json
import re

from lakehoused import events


async def test_the_page_and_its_files_are_served_from_the_package(lakehouse_client):
    client = await lakehouse_client()
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    text = await page.text()
    facts = json.loads(re.search(r'<script id="facts"[^>]*>(.*?)</script>', text).group(1))
    assert facts["eventTypes"] == sorted(events.EVENT_TYPES)
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        asset = await client.get(f"/ui/{name}")
        assert (asset.status, asset.content_type) == (200, kind)
        assert "cdn" not in (await asset.text()).lower()  # nothing fetched from elsewhere
    for missing in ("/ui/index.html", "/ui/nope.js", "/ui/..%2Fweb%2F__init__.py", "/ui/.x.js"):
        response = await client.get(missing)
        assert response.status == 404, missing
        assert (await response.json())["error"]["code"] == "not_found"


async def test_with_a_token_only_the_page_is_open(lakehouse_client):
    client = await lakehouse_client(env={"T": "tok"}, server='token_env = "T"')
    assert (await client.get("/")).status == 200
    assert (await client.get("/ui/app.js")).status == 200
    for path in ("/events", "/datasets", "/sql?q=SELECT%201"):
        assert (await client.get(path)).status == 401, path
    authorised = await client.get("/events", headers={"Authorization": "Bearer tok"})
    assert authorised.status == 200
