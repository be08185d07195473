"""Writers that pause, end to end: a file is complete when its writer is done with it.

Before: a writer holding the file open and writing a line every 0.9 s, with a
0.5 s stability window, had its file renamed into the warehouse at its first
pause; its later writes went into the warehouse file (the same inode), the
manifest recorded 6 bytes while the file ended with 30, and ``verify`` failed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tests.conftest import Env, run_ingestor
from tests.waiting import wait_for


def stays_false(predicate: Callable[[], object], seconds: float) -> bool:
    """Watch ``predicate`` for ``seconds`` (a writer's pause); True if it never held."""
    try:
        wait_for(predicate, seconds, "nothing (this wait is meant to time out)")
    except AssertionError:
        return True
    return False


def test_a_writer_that_pauses_longer_than_the_window_is_waited_for(env: Env, daemon) -> None:
    d = daemon(stability="0.5")
    path = env.landing / "slow.csv"
    data = b""
    with open(path, "wb", buffering=0) as fh:
        for i in range(5):
            line = f"line{i}\n".encode()
            fh.write(line)
            data += line
            assert stays_false(lambda: env.records(), 0.9), f"landed while open, after {len(data)} bytes"
    wait_for(lambda: env.records(), 20, "the file after its writer closed it")
    (rec,) = env.records()
    assert rec.size == 30 and rec.sha256 == hashlib.sha256(data).hexdigest()
    assert rec.warehouse is not None
    with open(rec.warehouse, "rb") as fh:
        assert fh.read() == data
    assert not d.event("file_changed_during_landing")
    d.stop()
    res = run_ingestor("verify", *env.args(), timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_file_renamed_into_place_needs_no_close(env: Env, daemon) -> None:
    """The common upload pattern is unchanged: written under a temporary name, renamed."""
    daemon(stability="0.2")
    tmp = env.landing / "upload.csv.part"
    with open(tmp, "wb", buffering=0) as fh:
        fh.write(b"payload")
        tmp.rename(env.landing / "upload.csv")  # renamed while still open: the name is complete
        wait_for(lambda: env.records(), 20, "the renamed file")
    assert env.records()[0].size == 7
