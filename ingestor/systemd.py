"""sd_notify: READY=1, WATCHDOG=1, STOPPING=1 and STATUS= to systemd.

The protocol is one datagram to the unix socket named by ``$NOTIFY_SOCKET``
(``@`` means the abstract namespace). The PyPI packages for it are either
unmaintained (``sdnotify``, 2017) or need libsystemd headers to build
(``systemd-python``), so this is the documented protocol, not a library.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``...) if run under systemd; False otherwise."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), addr)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's watchdog timeout in seconds, if one is set for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
