"""Owners: which process is working on a ledger record, and whether it is alive.

Every ledger row names its owner, a process id (ULID) that holds ``flock``
on ``owners/<owner>.lock`` beside the ledger for its lifetime. The kernel
drops the lock when the process dies, however it dies, so any process can
tell a dead owner from a live one and adopt its unfinished rows: the daemon,
its lander processes and ``ingestor replay`` share one ledger safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class OwnerLocks:
    """Liveness of ledger owners through ``flock`` on ``owners/<owner>.lock``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "owners"
        self._held: dict[str, int] = {}

    def acquire(self, owner: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f"{owner}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held[owner] = fd

    def try_take(self, owner: str) -> bool:
        """Lock a (presumed dead) owner's file; False if its process is alive."""
        if owner in self._held:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / f"{owner}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[owner] = fd
        return True

    def release(self, owner: str, *, remove: bool) -> None:
        fd = self._held.pop(owner, None)
        if fd is None:
            return
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / f"{owner}.lock")
        os.close(fd)

    def dead_owners(self) -> list[str]:
        """Owners whose lock file exists and is not held (their process died)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".lock"):
                owner = name[: -len(".lock")]
                if owner not in self._held and self.try_take(owner):
                    out.append(owner)
        return out

    def close(self) -> None:
        for owner in list(self._held):
            self.release(owner, remove=False)
