"""systemd's notify protocol (Type=notify): READY=1, STOPPING=1 and WATCHDOG=1 keep-alives.

A few lines over a datagram socket, so the daemon needs no extra package; outside systemd
(no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send one state line to systemd; False when not running under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


async def keep_alive(healthy: Callable[[], bool]) -> None:
    """Send WATCHDOG=1 at half the interval systemd asks for (WatchdogSec=), while healthy.

    A broken daemon stops sending, so systemd restarts it; so does a stuck event loop.
    """
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        return
    while True:
        if healthy():
            notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2_000_000)
