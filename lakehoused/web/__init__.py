"""The web page at `/`: a person's view of the lakehouse, over the same JSON API.

Plain HTML, CSS and JavaScript shipped as package data (no CDN, no build step): the page
and its files are served without the API token -- they hold no data -- and the page asks
for the token once, on the first 401, keeping it for the browser session. Everything it
shows comes from the documented API (`/datasets`, `/status`, `/events`, `/sql`, ...).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from aiohttp import web

from lakehoused import __version__, events

PAGE_PATH = "/"
ASSETS_PREFIX = "/ui/"
_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".html": "text/html",
}


def is_public(path: str) -> bool:
    """Whether a path is the page or one of its files (open without the API token)."""
    return path == PAGE_PATH or path.startswith(ASSETS_PREFIX)


@cache
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


@cache
def _page() -> bytes:
    """index.html with what the page needs to know and cannot ask for without a token."""
    facts = {"version": __version__, "eventTypes": sorted(events.EVENT_TYPES)}
    # "<" escaped so no value can close the script element it is embedded in.
    embedded = json.dumps(facts).replace("<", "\\u003c")
    return _asset("index.html").replace(b"{{FACTS}}", embedded.encode())


async def handle_page(request: web.Request) -> web.Response:
    """GET /: the page."""
    return web.Response(body=_page(), content_type="text/html", charset="utf-8", headers=_HEADERS)


async def handle_asset(request: web.Request) -> web.Response:
    """GET /ui/{name}: the page's stylesheet, script and icon."""
    name = request.match_info["name"]
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in _TYPES or name == "index.html":
        raise web.HTTPNotFound(reason=f"no page file {name!r}")
    try:
        body = _asset(name)
    except FileNotFoundError:
        raise web.HTTPNotFound(reason=f"no page file {name!r}") from None
    return web.Response(body=body, headers={"Content-Type": _TYPES[suffix], **_HEADERS})


# The files change with the package, so a browser revalidates them (never an old script
# beside a new API); the page runs only its own script and is never framed.
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def add_routes(app: web.Application) -> None:
    """Serve the page at / and its files under /ui/."""
    app.router.add_get(PAGE_PATH, handle_page)
    app.router.add_get(ASSETS_PREFIX + "{name}", handle_asset)
