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

from dataclasses import dataclass
from pathlib import Path

from ingestor.units import parse_size
from sampler.limits import Limits

__all__ = ["Settings", "parse_size"]


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
