"""Fault points for crash and fault-injection tests, off unless ``INGESTOR_FAULTS`` is set.

``INGESTOR_FAULTS="after_place=kill@3;manifest_write=torn@1"`` makes the 3rd
pass through ``after_place`` SIGKILL the process and the 1st manifest write
leave a torn line and die. Actions: ``kill`` (SIGKILL self), ``torn`` (where the
site supports it: write part of the data, then SIGKILL), ``enospc`` / ``eio``
(raise that OSError), ``exit`` (``os._exit(75)``).

Lander processes (``--processes``) also read ``INGESTOR_LANDER_FAULTS``,
which arms points in them only, not in the daemon that recovers after them.

Cost when off: call sites test the module constant ``ACTIVE`` (a ``None``)
before calling anything, so the normal path pays one global load.

The points, in commit order: ``before_plan`` (hashed, nothing recorded),
``after_plan`` (HASHED committed), ``after_place`` (one file renamed or
copied into place), ``after_dest_sync``, ``after_unlink`` (one source
removed), ``after_src_sync``, ``after_moved`` (the batch placed; MOVED
committed for the rows that need it),
``manifest_write`` (inside the append: supports ``torn``),
``after_manifest_fsync``, ``after_manifested`` (MANIFESTED committed),
``mid_copy`` (inside a cross-filesystem copy), ``before_commit`` (a ledger
transaction open, not committed).
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    rules: dict[str, tuple[str, int]]
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fire(self, point: str) -> str | None:
        """Count a pass through ``point``; return its action if this pass triggers it."""
        rule = self.rules.get(point)
        if rule is None:
            return None
        with self.lock:
            n = self.hits[point] = self.hits.get(point, 0) + 1
        action, at = rule
        if n != at:
            return None
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "exit":
            os._exit(75)
        elif action in ("enospc", "eio"):
            code = errno.ENOSPC if action == "enospc" else errno.EIO
            raise OSError(code, f"{os.strerror(code)} (injected at {point})")
        return action

    def hit(self, point: str) -> None:
        self.fire(point)


def parse(spec: str) -> Faults:
    rules: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        point, _, rest = part.partition("=")
        action, _, at = rest.partition("@")
        if action not in ("kill", "torn", "enospc", "eio", "exit"):
            raise ValueError(f"INGESTOR_FAULTS: unknown action {action!r} in {part!r}")
        rules[point.strip()] = (action, int(at or 1))
    return Faults(rules)


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


ACTIVE: Faults | None = parse(os.environ["INGESTOR_FAULTS"]) if os.environ.get("INGESTOR_FAULTS") else None
