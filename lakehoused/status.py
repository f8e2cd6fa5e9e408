"""`lakehoused status`: the running daemon's /health and /status, for a person at a terminal.

It asks the daemon over HTTP (the daemon alone knows its backlog), at the address its
config gives, with the API token when one is configured.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from typing import Any

from lakehoused.config import ServerConfig
from lakehoused.errors import LakehousedError

TIMEOUT_S = 5.0


class DaemonUnreachable(LakehousedError):
    """The daemon did not answer at the address its config gives."""

    code = "unreachable"


def daemon_url(server: ServerConfig) -> str:
    """Where the daemon of this config listens, as a client reaches it."""
    if server.port == 0:
        raise LakehousedError(
            "server.port is 0, so the daemon picked a free port at start (it printed it); "
            "pass that address with --url http://127.0.0.1:PORT"
        )
    host = server.host
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:  # bound to every address
        host = "::1" if address.version == 6 else "127.0.0.1"
        address = ipaddress.ip_address(host)
    if address is not None and address.version == 6:
        host = f"[{address}]"
    return f"http://{host}:{server.port}"


def fetch(url: str, token: str | None, timeout_s: float = TIMEOUT_S) -> tuple[dict, dict]:
    """(/health, /status) of the daemon at `url`; /health answers 503 with a body too."""
    return _get(url, "/health", None, timeout_s), _get(url, "/status", token, timeout_s)


def _get(url: str, path: str, token: str | None, timeout_s: float) -> dict:
    request = urllib.request.Request(url + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise DaemonUnreachable(
                f"the daemon at {url} refused the API token for {path}; "
                "check the variable server.token_env names"
            ) from None
        try:
            return json.loads(e.read())
        except ValueError:
            raise DaemonUnreachable(f"{url}{path} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DaemonUnreachable(
            f"cannot reach the daemon at {url}: {reason}; is `lakehoused run` running with "
            "this config?"
        ) from None


def render(url: str, health: dict, status: dict) -> str:
    """The two answers as a few lines a person reads."""
    state = health.get("status") or (health.get("error") or {}).get("code", "unknown")
    lines = [
        f"lakehoused at {url}: {state}, catalog at seq {health.get('catalog_seq', '?')}"
        + (f", up {_duration(health['uptime_s'])}" if "uptime_s" in health else "")
    ]
    counts = status.get("counts", {})
    pending = status.get("files_pending", 0)
    backlog = f"backlog: {_files(pending)} pending"
    if pending:
        backlog += " (" + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()) + ")"
        backlog += f"; oldest {_duration(status.get('oldest_pending_s') or 0)}"
    lines.append(backlog)
    for flight in status.get("in_flight", []):
        done = ""
        if flight.get("bytes_total"):
            fraction = flight.get("bytes_done", 0) / flight["bytes_total"]
            done = f"  {fraction:.0%} of {_size(flight['bytes_total'])}"
        lines.append(f"  in flight  {flight['file']} ({flight.get('dataset') or '?'}){done}")
    for item in status.get("pending", [])[:10]:
        if item.get("state") == "retrying":
            lines.append(
                f"  retrying   {item['file']}: try {item.get('attempts', 0) + 1} in "
                f"{_duration(item.get('retry_in_s') or 0)}: {item.get('error')}"
            )
    lines.append("last ingested: " + _summary(status.get("last_ingested")))
    lines.append("last error:    " + _summary(status.get("last_error")))
    problems = status.get("problems") or health.get("problems") or []
    for p in problems:
        lines.append(f"problem: {p['part']}: {p['reason']} (since {p['since']})")
    return "\n".join(lines)


def _summary(item: dict[str, Any] | None) -> str:
    if not item:
        return "none since the daemon started"
    text = f"{item['file']} -> {item.get('dataset') or '?'} ({item['status']}, seq {item['seq']})"
    if item.get("reason"):
        text += f": {item['reason']}"
    return text


def _files(n: int) -> str:
    return "1 file" if n == 1 else f"{n} files"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
