"""The checkpoint: atomic saves, strict loading, one sampler per checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sampler.checkpoint import Checkpoint, CheckpointError, load, lock, save


def test_missing_checkpoint_starts_from_the_beginning(tmp_path: Path) -> None:
    assert load(tmp_path / "none.json") == Checkpoint()


def test_round_trip_and_no_temporary_left(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    ck = Checkpoint(
        "2026/11/23/09/manifest.jsonl",
        {"2026/11/23/10/manifest.jsonl": 123, "2026/11/23/11/manifest.jsonl": 0},
    )
    save(path, ck)
    save(path, ck)
    assert load(path) == ck
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"version": 2, "retired_through": null, "offsets": {}}',
        b'{"version": 1, "retired_through": "../x", "offsets": {}}',
        b'{"version": 1, "retired_through": null, "offsets": {"a/b": 1}}',
        b'{"version": 1, "retired_through": null, "offsets": {"2026/11/23/10/manifest.jsonl": -1}}',
        b'{"version": 1, "retired_through": null, "offsets": {"2026/11/23/10/manifest.jsonl": 1.5}}',
        b'{"version": 1, "retired_through": "2026/11/23/10/manifest.jsonl",'
        b' "offsets": {"2026/11/23/10/manifest.jsonl": 5}}',
    ],
)
def test_untrustworthy_checkpoints_are_refused(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "ck.json"
    path.write_bytes(body)
    with pytest.raises(CheckpointError):
        load(path)


def test_one_sampler_per_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ck.json"
    fd = lock(path)
    try:
        with pytest.raises(CheckpointError, match="another sampler"):
            lock(path)
    finally:
        os.close(fd)
    os.close(lock(path))
