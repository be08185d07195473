"""Reading manifests forward: order, torn lines, late appends, retirement, restarts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog

from ingestor.manifest import hour_end_ns
from sampler.checkpoint import Checkpoint
from sampler.tail import Tail, discover
from tests.sampler_helpers import append_lines

H9 = "2026/11/23/09/manifest.jsonl"
H10 = "2026/11/23/10/manifest.jsonl"
H11 = "2026/11/23/11/manifest.jsonl"
NEXT_DAY = "2026/11/24/00/manifest.jsonl"


class Clock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def _tail(root: Path, ck: Checkpoint | None = None, clock: Clock | None = None) -> tuple[Tail, Any]:
    capture = structlog.testing.LogCapture()
    log = structlog.wrap_logger(None, processors=[capture])
    kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Tail(root, ck or Checkpoint(), log=log, **kw), capture


def _read(tail: Tail) -> list[tuple[str, bytes]]:
    out = []
    for line in tail.lines(stop=lambda: False):
        out.append((line.rel, line.data))
        tail.commit(line)
    return out


def test_discover_is_chronological_and_pruned(tmp_path: Path) -> None:
    for rel in (H11, NEXT_DAY, H9, H10, "2025/01/01/00/manifest.jsonl"):
        append_lines(tmp_path, rel, b"{}\n")
    (tmp_path / "2026" / "notes").mkdir()
    (tmp_path / "2026" / "11" / "23" / "12").mkdir()  # an hour directory with no file yet
    files, dirs = discover(tmp_path, None)
    assert files == ["2025/01/01/00/manifest.jsonl", H9, H10, H11, NEXT_DAY]
    files, dirs = discover(tmp_path, H10)
    assert files == [H11, NEXT_DAY]
    walked = {str(d.relative_to(tmp_path)) for d in dirs}
    assert "2025" not in walked and "2026/11/23/09" not in walked
    assert "2026/11/23/12" in walked  # watched so its file's creation is seen


def test_torn_last_line_is_never_yielded_nor_passed(tmp_path: Path) -> None:
    path = append_lines(tmp_path, H10, b'{"a":1}\n', b'{"b":')
    tail, _ = _tail(tmp_path)
    assert _read(tail) == [(H10, b'{"a":1}\n')]
    assert tail.checkpoint().offsets == {H10: 8}
    assert _read(tail) == []
    with open(path, "ab") as f:
        f.write(b'2}\n{"c":3}\n')
    assert _read(tail) == [(H10, b'{"b":2}\n'), (H10, b'{"c":3}\n')]


def test_torn_tail_cut_back_by_the_writer_then_new_lines(tmp_path: Path) -> None:
    path = append_lines(tmp_path, H10, b'{"a":1}\n', b'{"torn')
    tail, _ = _tail(tmp_path)
    _read(tail)
    os.truncate(path, 8)  # what ManifestWriter._repair_tail does
    append_lines(tmp_path, H10, b'{"b":2}\n')
    assert _read(tail) == [(H10, b'{"b":2}\n')]


def test_late_append_to_the_previous_hour_is_read_exactly_once(tmp_path: Path) -> None:
    append_lines(tmp_path, H10, b"10-a\n")
    clock = Clock(hour_end_ns(H10) + 500_000_000)  # 11:00:00.5, inside the late window
    tail, _ = _tail(tmp_path, clock=clock)
    assert _read(tail) == [(H10, b"10-a\n")]
    append_lines(tmp_path, H11, b"11-a\n")
    assert _read(tail) == [(H11, b"11-a\n")]
    assert tail.retire() == []
    append_lines(tmp_path, H10, b"10-late\n")  # batch planned at 10:59:59.9
    assert _read(tail) == [(H10, b"10-late\n")]
    assert _read(tail) == []
    # restart from the checkpoint: nothing is read twice
    again, _ = _tail(tmp_path, tail.checkpoint(), clock)
    assert _read(again) == []


def test_retirement_waits_for_the_late_window_and_the_grace(tmp_path: Path) -> None:
    append_lines(tmp_path, H9, b"9\n")
    append_lines(tmp_path, H10, b"10\n")
    end9 = hour_end_ns(H9)
    clock = Clock(end9 + 60 * 10**9 + 240 * 10**9)  # exactly at the limit: not yet
    tail, _ = _tail(tmp_path, clock=clock)
    _read(tail)
    assert tail.retire() == []
    clock.ns += 1
    assert tail.retire() == [H9]
    ck = tail.checkpoint()
    assert ck.retired_through == H9 and ck.offsets == {H10: 3}
    # a restart never opens the retired file again
    restarted, _ = _tail(tmp_path, ck, clock)
    restarted.refresh()
    assert restarted.files == [H10]


def test_retirement_needs_every_complete_line_processed(tmp_path: Path) -> None:
    append_lines(tmp_path, H9, b"9\n")
    clock = Clock(hour_end_ns(H9) + 3600 * 10**9)
    tail, _ = _tail(tmp_path, clock=clock)
    tail.refresh()
    assert tail.retire() == []  # not read yet
    _read(tail)
    assert tail.retire() == [H9]


def test_retirement_is_in_order(tmp_path: Path) -> None:
    append_lines(tmp_path, H9, b"9\n")
    append_lines(tmp_path, H10, b"10\n")
    clock = Clock(hour_end_ns(H10) + 3600 * 10**9)
    tail, _ = _tail(tmp_path, clock=clock)
    _read(tail)
    append_lines(tmp_path, H9, b"9-unread\n")  # breaks the contract, but must not be skipped
    assert tail.retire() == []
    _read(tail)
    assert tail.retire() == [H9, H10]


def test_old_torn_tail_is_logged_and_retired(tmp_path: Path) -> None:
    append_lines(tmp_path, H9, b"9\n", b"torn-forever")
    clock = Clock(hour_end_ns(H9) + 3600 * 10**9)
    tail, capture = _tail(tmp_path, clock=clock)
    _read(tail)
    assert tail.retire() == [H9]
    assert [e["event"] for e in capture.entries] == ["manifest_torn_tail"]


def test_resume_costs_only_the_new_lines(tmp_path: Path) -> None:
    big = b"".join(b'{"n": %d}\n' % i for i in range(20000))
    append_lines(tmp_path, H10, big)
    tail, _ = _tail(tmp_path)
    assert len(_read(tail)) == 20000
    append_lines(tmp_path, H10, b"new\n")
    restarted, _ = _tail(tmp_path, tail.checkpoint())
    assert _read(restarted) == [(H10, b"new\n")]


def test_bad_saved_offsets_are_moved_back_to_a_line_start(tmp_path: Path) -> None:
    append_lines(tmp_path, H10, b"aaaa\n", b"bbbb\n")
    tail, capture = _tail(tmp_path, Checkpoint(None, {H10: 7}))
    assert _read(tail) == [(H10, b"bbbb\n")]
    shrunk, capture2 = _tail(tmp_path, Checkpoint(None, {H10: 99}))
    assert _read(shrunk) == [(H10, b"aaaa\n"), (H10, b"bbbb\n")]  # rewritten: all again
    assert capture.entries[0]["event"] == "offset_not_at_line_start"
    assert capture2.entries[0]["event"] == "manifest_shrank"


def test_vanished_file_is_dropped(tmp_path: Path) -> None:
    tail, capture = _tail(tmp_path, Checkpoint(None, {H10: 5}))
    assert _read(tail) == []
    assert tail.checkpoint().offsets == {}
    assert capture.entries[0]["event"] == "manifest_vanished"


def test_lag_counts_unprocessed_bytes(tmp_path: Path) -> None:
    append_lines(tmp_path, H10, b"aaaa\n", b"bbbb\n")
    tail, _ = _tail(tmp_path)
    gen = tail.lines(stop=lambda: False)
    first = next(gen)
    tail.commit(first)
    gen.close()
    assert tail.lag() == 5
