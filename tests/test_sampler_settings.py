"""Size parsing for --max-bytes."""

from __future__ import annotations

import pytest

from sampler.settings import parse_size


@pytest.mark.parametrize(
    ("text", "value"),
    [("65536", 65536), ("64MiB", 64 << 20), ("64M", 64 << 20), ("1g", 1 << 30),
     ("500MB", 500_000_000), ("4 KiB", 4096), ("2T", 2 << 40), ("10b", 10)],
)  # fmt: skip
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5G", "12XB", "MiB", "1 2"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
