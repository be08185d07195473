"""The sampler's one settings object, built and validated at the edge (``cli``).

Two ways to say what to follow:

- ``--manifests`` (``Plain``): one manifests dir, its warehouse and samples
  dirs, one checkpoint file. Defaults, for the ingestor's default layout
  (warehouse, manifests and state side by side in one parent directory):
  ``--warehouse`` is ``<manifests>/../warehouse``; ``--checkpoint`` is
  ``<samples>/.sampler-checkpoint.json`` (it cannot collide with a sample:
  every sample name holds ``_sample`` before its suffix). Manifest paths are
  absolute; a record whose path is not under the warehouse root (as given,
  or its realpath) is rejected, never written outside ``--samples``.
- ``--config`` (``config.Config``): every source of the ingestor's TOML
  config, every manifests dir its templates match, one checkpoint per
  manifests dir in ``state_dir`` (``streams``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingestor.units import parse_size
from sampler.config import Config
from sampler.limits import Limits

__all__ = ["Plain", "Settings", "parse_size"]


@dataclass(frozen=True, slots=True)
class Plain:
    """``--manifests`` mode: one manifests dir, one target, one checkpoint file (absolute paths)."""

    manifests: Path
    warehouse: Path
    samples: Path
    checkpoint: Path


@dataclass(frozen=True, slots=True)
class Settings:
    limits: Limits
    plain: Plain | None = None  # exactly one of plain and config
    config: Config | None = None
    state_dir: Path | None = None  # --config: the checkpoints and their lock
    follow: bool = False
    poll_interval: float = 5.0  # seconds between passes with no inotify event
    metrics_interval: float = 60.0  # seconds between sampler_metrics log lines
    checkpoint_interval: float = 1.0  # at most this long between checkpoint saves mid-pass
    retire_grace: float = 240.0  # seconds past an hour's late-append window before retiring it
    log_level: str = "info"
