"""Other filesystems for unit tests: a second one (``/dev/shm``) and a tiny one (disk full).

Context managers, not fixtures: each test module wraps the ones it needs in a
fixture of its own, so no fixture is imported (and shadowed) across modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def shm_dir(other_than: Path) -> Iterator[Path]:
    """A fresh directory on ``/dev/shm``: a filesystem other than ``other_than``'s."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    d = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="ingestor-test-"))
    try:
        if os.stat(d).st_dev == os.stat(other_than).st_dev:
            pytest.skip("/dev/shm is on the same filesystem as the test dir")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def tiny_tmpfs(path: Path, size: str = "64k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root); skip the test if it cannot be."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
    try:
        yield path
    finally:
        res = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if res.returncode != 0:  # something in it is still open: do not leave a mount behind
            subprocess.run(["umount", "-l", str(path)], check=False)
            raise AssertionError(f"umount {path}: {res.stderr.strip()} (a descriptor left open?)")
