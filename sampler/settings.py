"""The sampler's one settings reader: flags > ``SAMPLER_*`` environment > ``[sampler]`` table > defaults.

Every setting is declared once, as a row of ``TABLE`` (``Spec``: default,
parser, help, what ``--help`` says for its default): the CLI makes
its flags from the table (``cli``), ``SAMPLER_<NAME>`` is its environment
variable, and, unless it is one of the plain flags, ``<name>`` is its key in
the ``[sampler]`` table of the ``--config`` file. ``load`` judges every value
once, whatever it came from, and returns one frozen ``Settings`` or raises
``SettingsError`` whose message is one line naming the setting (the CLI exits
2). A value in the file is judged even where a flag overrides it, as the
ingestor does.

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
  manifests dir in ``state_dir`` (``streams``). The plain flags are refused
  beside it: the file names those dirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.logs import LEVELS
from ingestor.settings import number as _number
from ingestor.settings import path_value as _path
from ingestor.settings import port_value as _port
from ingestor.units import parse_size
from sampler.config import Config, ConfigError, check_state_dir
from sampler.config import read as read_config
from sampler.limits import Limits

__all__ = ["ENV_PREFIX", "TABLE", "Plain", "Settings", "SettingsError", "load", "parse_size"]

ENV_PREFIX = "SAMPLER_"
PLAIN = ("manifests", "samples", "warehouse", "checkpoint")  # one manifests dir; never beside --config


class SettingsError(ValueError):
    """An invalid setting or combination; the message is one line naming it."""


# ---------------------------------------------------------------- parsing


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _size(text: Any) -> int:
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"{text!r} is not a size (examples: 65536, 64MiB, 1G, 500MB)")
    return parse_size(str(text))


def _level(text: Any) -> str:
    low = str(text).strip().lower()
    if low not in LEVELS:
        raise ValueError(f"{text!r} is not a log level")
    return low


# ---------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """A setting's row: a flag, ``SAMPLER_<NAME>`` and (``in_file``) a ``[sampler]`` key."""

    default: Any
    parse: Callable[[Any], Any]
    help: str
    default_text: str | None = None  # what --help says when the default is not a plain value
    in_file: bool = True
    short: str | None = None
    off: str | None = None  # a boolean's other flag (--follow/--once)
    metavar: str | None = None
    choices: tuple[str, ...] = ()


# Every setting, declared once (its name is the key): the flags, the environment
# variables, the [sampler] keys and --help come from these rows.
TABLE: dict[str, Spec] = {
    "config": Spec(
        default=None,
        parse=_path,
        help="The ingestor's TOML config: follow every source's manifests dirs; "
        "its [sampler] table holds these settings.",
        in_file=False,
        short="-c",
        metavar="FILE",
    ),
    "manifests": Spec(
        default=None,
        parse=_path,
        help="One manifests directory (YYYY/MM/DD/HH/manifest.jsonl), without --config.",
        in_file=False,
        metavar="DIR",
    ),
    "samples": Spec(
        default=None,
        parse=_path,
        help="With --manifests: where samples are written.",
        in_file=False,
        metavar="DIR",
    ),
    "warehouse": Spec(
        default=None,
        parse=_path,
        help="With --manifests: the root that manifest paths lie under.",
        default_text="<manifests>/../warehouse",
        in_file=False,
        metavar="DIR",
    ),
    "checkpoint": Spec(
        default=None,
        parse=_path,
        help="With --manifests: the checkpoint file.",
        default_text="<samples>/.sampler-checkpoint.json",
        in_file=False,
        metavar="FILE",
    ),
    "state_dir": Spec(
        default=None,
        parse=_path,
        help="With --config: the checkpoints, one per manifests dir, and the lock.",
        default_text="<dir of state_path>/sampler",
        metavar="DIR",
    ),
    "rows": Spec(
        default=100, parse=_number(int, 1, 1_000_000_000), help="Records kept per sample.", metavar="N"
    ),
    "max_bytes": Spec(
        default=64 << 20,
        parse=_size,
        help="Input read per file, decompressed bytes included (64MiB, 1G...).",
        default_text="64MiB",
        metavar="SIZE",
    ),
    "max_seconds": Spec(
        default=30.0,
        parse=_number(float, 0.001, 86400.0),
        help="Time allowed per file.",
        metavar="SECONDS",
    ),
    "follow": Spec(
        default=False,
        parse=_bool,
        help="Keep tailing, or process what is there and exit.",
        off="--once",
    ),
    "poll_interval": Spec(
        default=5.0,
        parse=_number(float, 0.01, 86400.0),
        help="--follow: seconds between passes with no event.",
        metavar="SECONDS",
    ),
    "metrics_interval": Spec(
        default=60.0,
        parse=_number(float, 0.01, 86400.0),
        help="Seconds between sampler_metrics log lines.",
        metavar="SECONDS",
    ),
    "metrics_port": Spec(
        default=None,
        parse=_port,
        help="--follow: serve Prometheus metrics on 127.0.0.1 at this port.",
        default_text="off",
        metavar="PORT",
    ),
    "retire_grace": Spec(
        default=240.0,
        parse=_number(float, 0.0, 7 * 86400.0),
        help="Seconds an hour file stays open past its 60 s late-append window (clock skew).",
        metavar="SECONDS",
    ),
    "log_level": Spec(default="info", parse=_level, help="Log level.", choices=LEVELS),
}
DEFAULTS: dict[str, Any] = {name: spec.default for name, spec in TABLE.items()}


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
    metrics_port: int | None = None  # --follow: the Prometheus endpoint on 127.0.0.1
    checkpoint_interval: float = 1.0  # at most this long between checkpoint saves mid-pass
    retire_grace: float = 240.0  # seconds past an hour's late-append window before retiring it
    log_level: str = "info"


# ---------------------------------------------------------------- merging


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse(name: str, value: Any, origin: str) -> Any:
    spec = TABLE[name]
    try:
        return spec.parse(value)
    except (ValueError, TypeError) as exc:
        choices = f" (choose from {', '.join(spec.choices)})" if spec.choices else ""
        raise SettingsError(f"invalid {origin} for {name}: {exc}{choices}") from None


def load(
    flags: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """Merge flags, environment and the ``[sampler]`` table; validate; fill the defaults."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    given: dict[str, Any] = {}
    said: dict[str, str] = {}  # how the operator said it, for a refusal: --manifests, SAMPLER_MANIFESTS
    for name in TABLE:
        env = ENV_PREFIX + name.upper()
        if env in environ:
            given[name] = _parse(name, environ[env], f"environment {env}")
            said[name] = env
    for name, value in flags.items():
        if name not in TABLE:
            raise SettingsError(f"unknown setting {name!r}")
        if value is not None:
            given[name] = _parse(name, value, f"value of {_flag(name)}")
            said[name] = _flag(name)
    merged = dict(given)
    cfg: Config | None = None
    if given.get("config") is not None:
        plain = [n for n in PLAIN if n in given]
        if plain:
            raise SettingsError(
                f"{said[plain[0]]} and {said['config']} together: the config file's sources name "
                "the manifests, warehouse and samples dirs, and checkpoints go in the state dir"
            )
        try:
            cfg = read_config(_absolute(given["config"], cwd), cwd)
        except ConfigError as exc:
            raise SettingsError(str(exc)) from None
        where = f"[sampler] of {cfg.path}"
        for key, value in cfg.sampler.items():
            if key not in TABLE or not TABLE[key].in_file:
                raise SettingsError(f"unknown setting {key!r} in {where}")
            parsed = _parse(key, value, f"value in {where}")
            merged.setdefault(key, parsed)
    values = {**DEFAULTS, **merged}
    limits = Limits(rows=values["rows"], max_bytes=values["max_bytes"], max_seconds=values["max_seconds"])
    common: dict[str, Any] = {
        k: values[k]
        for k in ("follow", "poll_interval", "metrics_interval", "metrics_port", "retire_grace", "log_level")
    }
    if cfg is None:
        if "state_dir" in given:
            raise SettingsError(f"{said['state_dir']} goes with --config; with --manifests give --checkpoint")
        return Settings(limits, plain=_plain(values, cwd), **common)
    state_dir = _state_dir(cfg, values["state_dir"], cwd)
    return Settings(limits, config=cfg, state_dir=state_dir, **common)


def _absolute(path: Path, cwd: Path) -> Path:
    return Path(os.path.normpath(cwd / path.expanduser()))


def _nested(a: Path, b: Path) -> bool:
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    return ra == rb or ra.startswith(rb.rstrip("/") + "/") or rb.startswith(ra.rstrip("/") + "/")


def _plain(values: Mapping[str, Any], cwd: Path) -> Plain:
    if values["manifests"] is None:
        raise SettingsError(
            "missing option '--manifests': give --manifests DIR (or SAMPLER_MANIFESTS), "
            "or --config FILE (or SAMPLER_CONFIG)"
        )
    if values["samples"] is None:
        raise SettingsError(
            "missing option '--samples': give --samples DIR (or SAMPLER_SAMPLES) with --manifests"
        )
    manifests = _absolute(values["manifests"], cwd)
    _readable_dir(manifests)
    samples = _absolute(values["samples"], cwd)
    wh = values["warehouse"]
    warehouse = _absolute(wh, cwd) if wh is not None else manifests.parent / "warehouse"
    for name, other in (("--manifests", manifests), ("--warehouse", warehouse)):
        if _nested(samples, other):
            raise SettingsError(
                f"--samples {samples} and {name} {other} are the same directory or one inside the other"
            )
    ck = values["checkpoint"]
    checkpoint = _absolute(ck, cwd) if ck is not None else samples / ".sampler-checkpoint.json"
    return Plain(manifests, warehouse, samples, checkpoint)


def _readable_dir(path: Path) -> None:
    """A directory the sampler can list, or a usage error (exit 2) before anything is created."""
    try:
        with os.scandir(path):
            pass
    except FileNotFoundError:
        raise SettingsError(f"invalid value for '--manifests': {path}: no such directory") from None
    except NotADirectoryError:
        raise SettingsError(f"invalid value for '--manifests': {path}: not a directory") from None
    except OSError as exc:
        raise SettingsError(
            f"invalid value for '--manifests': {path}: cannot be read: {exc.strerror}"
        ) from None


def _state_dir(cfg: Config, chosen: Path | None, cwd: Path) -> Path:
    if chosen is None:
        chosen = cfg.state_dir
    if chosen is None:
        raise SettingsError(
            f"config file {cfg.path}: no state dir for the checkpoints: "
            "set state_path (the ledger) or [sampler] state_dir, or give --state-dir"
        )
    chosen = _absolute(chosen, cwd)
    try:
        check_state_dir(cfg.sources, chosen)
    except ConfigError as exc:
        raise SettingsError(f"config file {cfg.path}: {exc}") from None
    return chosen
