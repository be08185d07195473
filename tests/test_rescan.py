"""rescan.scan: the walk in its own thread, the ledger asked in the caller's."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor import rescan
from ingestor.fsops import OPEN_DIR


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "landing"
    for d in range(5):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(700):
            (root / f"d{d}" / f"f{i}.csv").write_bytes(b"x")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "never.csv").write_bytes(b"x")
    (root / "link").symlink_to(root / "d0")  # never followed: seen as a link
    os.mkfifo(root / "fifo")
    fd = os.open(root, OPEN_DIR)
    yield root, fd
    os.close(fd)


def test_only_what_the_ledger_does_not_know_is_emitted(tree: tuple[Path, int]) -> None:
    root, fd = tree
    asked: list[int] = []
    emitted: list[rescan.Observation] = []
    threads: set[str] = set()

    def unknown(keys: list[rescan.Key]) -> list[int]:
        threads.add(threading.current_thread().name)
        asked.append(len(keys))
        known = os.stat(root / "d1" / "f5.csv").st_ino
        return [i for i, k in enumerate(keys) if k[1] != known]

    seen = rescan.scan(
        fd, "", emit=emitted.extend, unknown=unknown, ignored=lambda rel: rel.endswith("f9.csv")
    )
    rels = {rel for rel, _ in emitted}
    assert seen == 5 * 700 + 2  # the link and the FIFO are seen; the hidden dir is not entered
    assert sum(asked) == 5 * 700  # regular files only go to the ledger
    assert threads == {threading.current_thread().name}  # the caller's reader connection
    assert "d1/f5.csv" not in rels and "d2/f9.csv" not in rels
    assert {"link", "fifo", "d0/f0.csv"} <= rels
    assert len(rels) == 5 * 700 - 1 - 5 + 2


def test_a_ledger_error_ends_the_walk_and_is_raised(tree: tuple[Path, int]) -> None:
    _, fd = tree
    calls = 0

    def unknown(keys: list[rescan.Key]) -> list[int]:
        nonlocal calls
        calls += 1
        raise RuntimeError("ledger gone")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="ledger gone"):
        rescan.scan(fd, "", emit=lambda c: None, unknown=unknown, ignored=lambda rel: False)
    assert calls == 1
    assert threading.active_count() == before  # the walker thread has ended


def test_a_walk_error_is_raised_in_the_caller(
    tree: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fd = tree

    def broken_walk(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        yield [("a", os.stat("/"))]
        raise OSError(5, "I/O error")

    monkeypatch.setattr(rescan, "walk", broken_walk)
    with pytest.raises(OSError, match="I/O error"):
        rescan.scan(fd, "", emit=lambda c: None, unknown=lambda k: [], ignored=lambda rel: False)


def test_stop_ends_the_scan(tree: tuple[Path, int]) -> None:
    _, fd = tree
    stop = threading.Event()
    stop.set()
    seen = rescan.scan(
        fd, "", emit=lambda c: None, unknown=lambda k: list(range(len(k))), ignored=lambda r: False, stop=stop
    )
    assert seen < 5 * 700
