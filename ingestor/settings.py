"""The one configuration reader: flags > ``INGESTOR_*`` environment > TOML file > defaults.

``load`` returns one frozen ``Settings`` or raises ``SettingsError`` whose
message is a single line naming the setting; the CLI prints it and exits 2.
Relative paths are made absolute against the working directory once, here.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from ingestor.layout import DEFAULT_LAYOUT, LayoutError, validate_layout


class SettingsError(ValueError):
    """An invalid setting; the message is one line naming it."""


class Mode(StrEnum):
    STABILITY = "stability"
    SIDECAR = "sidecar"


class WatcherKind(StrEnum):
    AUTO = "auto"
    INOTIFY = "inotify"
    WATCHDOG = "watchdog"
    POLL = "poll"


class OnDuplicate(StrEnum):
    QUARANTINE = "quarantine"
    DELETE = "delete"
    KEEP = "keep"


class Dedup(StrEnum):
    CONTENT = "content"
    PATH_CONTENT = "path+content"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


# One lander per core, between 2 (reads overlap hashing) and 4: more threads
# than cores only fight over the GIL for small files (bench/RESULTS.md, 1.)
DEFAULT_CONCURRENCY = max(2, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class Settings:
    input: Path
    warehouse: Path
    manifests: Path
    state_path: Path
    mode: Mode = Mode.STABILITY
    stability_seconds: float = 2.0
    sidecar_suffix: str = ".ok"
    scan_interval: float = 60.0
    concurrency: int = DEFAULT_CONCURRENCY
    processes: int = 1
    batch_size: int = 1024
    dry_run: bool = False
    watcher: WatcherKind = WatcherKind.AUTO
    layout: str = DEFAULT_LAYOUT
    on_duplicate: OnDuplicate = OnDuplicate.QUARANTINE
    dedup: Dedup = Dedup.CONTENT
    ignore_suffixes: tuple[str, ...] = (".tmp", ".part", ".swp")
    log_level: LogLevel = LogLevel.INFO
    metrics_port: int | None = None
    metrics_interval: float = 60.0
    shutdown_timeout: float = 30.0
    retry_max_seconds: float = 60.0

    @property
    def ledger_dir(self) -> Path:
        return self.state_path.parent


# ---------------------------------------------------------------- parsing


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def _number(kind: type[float] | type[int], low: float, high: float = math.inf) -> Callable[[Any], Any]:
    def parse(text: Any) -> Any:
        if isinstance(text, bool):
            raise ValueError(f"{text!r} is not a number")
        if kind is int and isinstance(text, float):
            raise ValueError(f"{text!r} is not a whole number")
        value = kind(text)
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number")
        if not low <= value <= high:
            raise ValueError(f"{text!r} is out of range [{low}, {high}]")
        return value

    return parse


def _suffixes(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    if not all(isinstance(s, str) for s in items):
        raise ValueError(f"{text!r} is not a list of suffixes like '.tmp'")
    out = tuple(s.strip() for s in items if s.strip())
    for s in out:
        if not s.startswith(".") or "/" in s:
            raise ValueError(f"{s!r} is not a suffix like '.tmp'")
    return out


def _port(text: Any) -> int | None:
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    return int(_number(int, 0, 65535)(text))


def _sidecar(text: Any) -> str:
    s = str(text)
    if not s.startswith(".") or "/" in s or len(s) < 2:
        raise ValueError(f"{s!r} is not a suffix like '.ok'")
    return s


def _layout(text: Any) -> str:
    try:
        return validate_layout(str(text))
    except LayoutError as exc:
        raise ValueError(str(exc)) from exc


def _path(text: Any) -> Path:
    """A path as given; judged as text, before ``Path`` turns ``""`` into ``"."``."""
    if isinstance(text, os.PathLike):
        text = os.fspath(text)
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a path")
    if "\0" in text:
        raise ValueError("a path cannot hold a NUL byte")
    if not text.strip():
        raise ValueError("the path is empty")
    if text != text.strip():
        raise ValueError(f"{text!r} starts or ends with white space")
    return Path(text)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "input": _path,
    "warehouse": _path,
    "manifests": _path,
    "state_path": _path,
    "mode": Mode,
    "stability_seconds": _number(float, 0.0, 86400.0),
    "sidecar_suffix": _sidecar,
    "scan_interval": _number(float, 0.05, 86400.0),
    "concurrency": _number(int, 1, 256),
    "processes": _number(int, 1, 64),
    "batch_size": _number(int, 1, 100_000),
    "dry_run": _bool,
    "watcher": WatcherKind,
    "layout": _layout,
    "on_duplicate": OnDuplicate,
    "dedup": Dedup,
    "ignore_suffixes": _suffixes,
    "log_level": lambda t: LogLevel(str(t).lower()),
    "metrics_port": _port,
    "metrics_interval": _number(float, 0.0, 86400.0),
    "shutdown_timeout": _number(float, 0.0, 86400.0),
    "retry_max_seconds": _number(float, 0.1, 86400.0),
}

ENV_PREFIX = "INGESTOR_"


def _parse(name: str, value: Any, origin: str) -> Any:
    try:
        return _PARSERS[name](value)
    except (ValueError, TypeError) as exc:
        choices = ""
        parser = _PARSERS[name]
        if isinstance(parser, type) and issubclass(parser, StrEnum):
            choices = f" (choose from {', '.join(m.value for m in parser)})"
        raise SettingsError(f"invalid {origin} for {name}: {exc}{choices}") from None


def parse_path(name: str, value: Any, cwd: Path | None = None, *, origin: str | None = None) -> Path:
    """One path given outside the settings (``verify``'s and ``status``'s flags, ``replay``'s
    arguments), judged as a setting's: absolute."""
    try:
        path = _path(value)
    except ValueError as exc:
        where = origin or f"value of --{name.replace('_', '-')}"
        raise SettingsError(f"invalid {where} for {name}: {exc}") from None
    return Path(os.path.normpath((cwd or Path.cwd()) / os.path.expanduser(path)))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("ingestor", data)
    if not isinstance(section, dict):
        raise SettingsError(f"config file {path}: [ingestor] must be a table")
    return {k.replace("-", "_"): v for k, v in section.items() if k != "ingestor"}


def load(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge the sources, validate every value, fill the path defaults."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if config is None and environ.get(ENV_PREFIX + "CONFIG"):
        config = Path(environ[ENV_PREFIX + "CONFIG"])
    if config is not None:
        for key, value in read_toml(config).items():
            if key not in _PARSERS:
                raise SettingsError(f"unknown setting {key!r} in config file {config}")
            merged[key] = _parse(key, value, f"value in {config}")
            origins[key] = str(config)
    for key in _PARSERS:
        env_key = ENV_PREFIX + key.upper()
        if env_key in environ:
            merged[key] = _parse(key, environ[env_key], f"environment {env_key}")
            origins[key] = env_key
    for key, value in flags.items():
        if value is None:
            continue
        if key not in _PARSERS:
            raise SettingsError(f"unknown setting {key!r}")
        merged[key] = _parse(key, value, f"value of --{key.replace('_', '-')}")
    return _finish(merged, cwd or Path.cwd())


def _finish(values: dict[str, Any], cwd: Path) -> Settings:
    if "input" not in values:
        raise SettingsError("missing setting input: give --input DIR (or INGESTOR_INPUT)")
    for key in ("input", "warehouse", "manifests", "state_path"):
        if key in values:
            values[key] = Path(os.path.normpath(cwd / Path(os.path.expanduser(values[key]))))
    base = values["input"].parent
    values.setdefault("warehouse", base / "warehouse")
    values.setdefault("manifests", base / "manifests")
    values.setdefault("state_path", base / "state" / "ledger.sqlite")
    settings = Settings(**values)
    _check_paths(settings)
    return settings


def _inside(child: Path, parent: Path) -> bool:
    c, p = os.path.realpath(child), os.path.realpath(parent)  # never raises: unresolvable parts stay
    return c == p or c.startswith(p.rstrip("/") + "/")


def _check_paths(s: Settings) -> None:
    """Refuse paths that overlap or name the wrong kind of thing, before anything is touched."""
    if s.input == Path("/"):
        raise SettingsError("invalid input: the landing dir cannot be /")
    for name in ("warehouse", "manifests", "state_path"):
        other = getattr(s, name)
        if _inside(other, s.input):
            raise SettingsError(
                f"invalid {name}: {other} is inside the landing dir {s.input}; it would be ingested"
            )
        if _inside(s.input, other):
            raise SettingsError(f"invalid input: {s.input} is inside {name} {other}")
    if _inside(s.manifests, s.warehouse) or _inside(s.warehouse, s.manifests):
        raise SettingsError(
            f"invalid manifests: {s.manifests} and the warehouse {s.warehouse} overlap; "
            "manifest files in the warehouse would be audited as landed files"
        )
    for name in ("warehouse", "manifests"):
        if _inside(s.state_path, getattr(s, name)):
            raise SettingsError(f"invalid state_path: {s.state_path} is inside {name} {getattr(s, name)}")
    try:
        for name in ("input", "warehouse", "manifests"):
            path = getattr(s, name)
            if path.exists() and not path.is_dir():
                raise SettingsError(f"invalid {name}: {path} exists and is not a directory")
        if s.state_path.exists() and not s.state_path.is_file():
            raise SettingsError(f"invalid state_path: {s.state_path} exists and is not a file")
    except OSError as exc:
        raise SettingsError(f"invalid path: cannot reach {exc.filename}: {exc.strerror}") from None


def describe(s: Settings) -> dict[str, Any]:
    """The effective configuration as plain values (for ``config show``)."""
    out: dict[str, Any] = {}
    for f in fields(s):
        v = getattr(s, f.name)
        out[f.name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out
