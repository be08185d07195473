"""sd_notify: READY / WATCHDOG / STOPPING / STATUS to systemd over $NOTIFY_SOCKET.

One datagram per message on an ``AF_UNIX`` socket; a path starting with
``@`` names the abstract namespace. Without ``$NOTIFY_SOCKET`` (not run by
systemd with ``Type=notify``) every call is a no-op. Failures to send are
ignored: systemd's own timeouts are the judge of a sampler that cannot talk.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send one message (``READY=1``, ``STATUS=...``); True when sent."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half the timeout), or None when off."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.01, int(usec) / 2e6)
    except ValueError:
        return None
