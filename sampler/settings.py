"""The sampler's one settings object, built and validated at the edge (``cli``).

Defaults, for the ingestor's default layout (warehouse, manifests and state
side by side in one parent directory):

- ``--warehouse``: ``<manifests>/../warehouse``. Manifest paths are absolute;
  a record whose path is not under this root (as given, or its realpath) is
  rejected, never written outside ``--samples``.
- ``--checkpoint``: ``<samples>/.sampler-checkpoint.json``. It cannot collide
  with a sample: every sample name holds ``_sample`` before its suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sampler.limits import Limits

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


@dataclass(frozen=True, slots=True)
class Settings:
    manifests: Path
    samples: Path
    warehouse: Path
    checkpoint: Path
    limits: Limits
    follow: bool = False
    poll_interval: float = 5.0  # seconds between passes with no inotify event
    metrics_interval: float = 60.0  # seconds between sampler_metrics log lines
    checkpoint_interval: float = 1.0  # at most this long between checkpoint saves mid-pass
    retire_grace: float = 240.0  # seconds past an hour's late-append window before retiring it
    log_level: str = "info"
