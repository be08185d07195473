"""Waiting on conditions with a deadline: the only way tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s.

    The poll interval grows from 1 ms to 50 ms: a condition met quickly costs
    almost nothing, a slow one does not spin a core.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(delay)  # the polling interval of a deadline wait, not a fixed sleep
        delay = min(delay * 2, 0.05)
