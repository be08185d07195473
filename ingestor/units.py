"""Sizes as people write and read them: ``64MiB`` in, ``1.5 GiB`` out."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 1000,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 1000**2,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 1000**3,
    "t": 1 << 40,
    "tib": 1 << 40,
    "tb": 1000**4,
}


def parse_size(text: str) -> int:
    """``65536``, ``64K``/``64KiB`` (1024), ``64KB`` (1000), up to T; ValueError otherwise."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size (examples: 65536, 64MiB, 1G, 500MB)")
    value = int(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise ValueError(f"{text!r}: a size must be positive")
    return value


def human_bytes(n: int) -> str:
    """``512 B``, ``12.5 KiB``, ``2.0 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
