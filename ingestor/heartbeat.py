"""Heartbeat: the periodic ``metrics`` log line and the systemd watchdog ping.

Two deadlines on the event loop, kept independently: the watchdog's
(``WATCHDOG_USEC`` / 2, from systemd) and the metrics line's
(``--metrics-interval``; 0: none). A loop that stops turning stops the pings,
and systemd restarts the daemon: that is the point of pinging from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ingestor import systemd
from ingestor.metrics import Metrics


async def heartbeat(metrics: Metrics, every: float, log: Any, gauges: Callable[[], dict[str, int]]) -> None:
    """Runs until cancelled; ``gauges()`` adds the daemon's queue sizes to each metrics line."""
    wd = systemd.watchdog_interval()
    now = time.monotonic()
    next_wd = now + wd if wd else None
    next_metrics = now + every if every else None
    while True:
        # two independent deadlines: the watchdog ping must not stretch the metrics period
        due = min(t for t in (next_wd, next_metrics, now + 3600.0) if t is not None)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        if next_wd is not None and wd and now >= next_wd - 1e-3:
            systemd.notify("WATCHDOG=1")
            next_wd = now + wd
        if next_metrics is not None and every and now >= next_metrics - 1e-3:
            next_metrics += every
            log.info("metrics", **metrics.snapshot(), **gauges())
