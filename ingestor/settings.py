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
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from ingestor.globs import compile_globs
from ingestor.layout import DEFAULT_LAYOUT, FIELDS, LayoutError, fields_of, validate_layout


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


class DedupScope(StrEnum):
    DATASET = "dataset"  # the source and its placeholder values: one landing dir
    GLOBAL = "global"  # everything the daemon lands


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @classmethod
    def _missing_(cls, value: object) -> LogLevel | None:
        """``INFO`` and ``Info`` are ``info``."""
        lowered = str(value).lower()
        return next((m for m in cls if m.value == lowered), None)


# One lander per core, between 2 (reads overlap hashing) and 4: more threads
# than cores only fight over the GIL for small files (bench/RESULTS.md, 1.)
DEFAULT_CONCURRENCY = max(2, min(4, os.cpu_count() or 1))


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
        what = f"{'whole ' if kind is int else ''}number"
        if isinstance(text, bool) or (kind is int and isinstance(text, float)):
            raise ValueError(f"{text!r} is not a {what}")
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise ValueError(f"{text!r} is not a {what}") from None
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
    """A layout; the placeholders it uses are checked against its source's path later."""
    try:
        return validate_layout(str(text), placeholders=True)
    except LayoutError as exc:
        raise ValueError(str(exc)) from exc


def _globs(text: Any) -> tuple[str, ...]:
    items = text if isinstance(text, list | tuple) else [g for g in str(text).split(",") if g.strip()]
    if not all(isinstance(g, str) for g in items):
        raise ValueError(f"{text!r} is not a list of globs like '**/*.csv'")
    out = tuple(g.strip() for g in items)
    compile_globs(out)
    return out


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


# the parsers the sampler's settings table shares (one way to judge a path or a number)
path_value = _path
number = _number
port_value = _port

# ---------------------------------------------------------------- the table

RUN = frozenset({"run"})
RUN_REPLAY = frozenset({"run", "replay"})
PATHS = ("input", "warehouse", "manifests", "state_path", "samples")


@dataclass(frozen=True, slots=True)
class Spec:
    """A setting's row in the table, beside its type and default in ``Settings``.

    Every setting is a flag of the commands named (``config show`` takes
    ``run``'s), an ``INGESTOR_<NAME>`` environment variable and a TOML key.
    ``per_source`` says a ``[[source]]`` table may set it for its source.
    """

    parse: Callable[[Any], Any]
    help: str
    commands: frozenset[str] = RUN_REPLAY
    short: str | None = None
    default_text: str | None = None  # what --help says when the default is not a plain value
    per_source: bool = False

    @property
    def choices(self) -> tuple[str, ...]:
        parse = self.parse
        if isinstance(parse, type) and issubclass(parse, StrEnum):
            return tuple(m.value for m in parse)
        return ()


def setting(default: Any = MISSING, **spec: Any) -> Any:
    """A ``Settings`` field: its default, and its row of the table in the field's metadata."""
    meta = {"spec": Spec(**spec)}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every setting, declared once: name, type, default (here) and its row (``Spec``)."""

    input: Path = setting(parse=_path, help="Landing directory to watch.", short="-i", per_source=True)
    warehouse: Path = setting(
        parse=_path, help="Warehouse directory.", default_text="<input>/../warehouse", per_source=True
    )
    manifests: Path = setting(
        parse=_path, help="Manifest directory.", default_text="<input>/../manifests", per_source=True
    )
    samples: Path | None = setting(
        None,
        parse=_path,
        help="Samples directory of this source (written by `sampler run --config`).",
        default_text="none",
        commands=RUN,
        per_source=True,
    )
    state_path: Path = setting(
        parse=_path, help="SQLite ledger.", default_text="<input>/../state/ledger.sqlite"
    )
    mode: Mode = setting(Mode.STABILITY, parse=Mode, help="Completion detection.", per_source=True)
    stability_seconds: float = setting(
        2.0,
        parse=_number(float, 0.0, 86400.0),
        help="Seconds a file must stay unchanged to be complete.",
        per_source=True,
    )
    sidecar_suffix: str = setting(
        ".ok", parse=_sidecar, help="Sidecar suffix in sidecar mode.", per_source=True
    )
    scan_interval: float = setting(
        60.0, parse=_number(float, 0.05, 86400.0), help="Seconds between reconciliation scans.", commands=RUN
    )
    concurrency: int = setting(
        DEFAULT_CONCURRENCY,
        parse=_number(int, 1, 256),
        help="Worker threads.",
        default_text="the cores, 2 to 4",
    )
    processes: int = setting(
        1,
        parse=_number(int, 1, 64),
        help="Lander processes; more than 1 uses more cores for many small files.",
    )
    batch_size: int = setting(
        1024, parse=_number(int, 1, 100_000), help="Files per batch (one group commit)."
    )
    dry_run: bool = setting(False, parse=_bool, help="Report, move nothing.")
    watcher: WatcherKind = setting(
        WatcherKind.AUTO, parse=WatcherKind, help="How events are watched.", commands=RUN
    )
    layout: str = setting(DEFAULT_LAYOUT, parse=_layout, help="Warehouse path template.", per_source=True)
    on_duplicate: OnDuplicate = setting(
        OnDuplicate.QUARANTINE, parse=OnDuplicate, help="What happens to a duplicate.", per_source=True
    )
    dedup: Dedup = setting(Dedup.CONTENT, parse=Dedup, help="What makes a file a duplicate.", per_source=True)
    ignore_suffixes: tuple[str, ...] = setting(
        (".tmp", ".part", ".swp"),
        parse=_suffixes,
        help="Name suffixes never ingested (comma-separated).",
        per_source=True,
    )
    include: tuple[str, ...] = setting(
        (),
        parse=_globs,
        help="Globs on the path below the landing dir; only matching files land (comma-separated).",
        default_text="everything",
        per_source=True,
    )
    exclude: tuple[str, ...] = setting(
        (),
        parse=_globs,
        help="Globs on the path below the landing dir never ingested (comma-separated).",
        default_text="none",
        per_source=True,
    )
    dedup_scope: DedupScope = setting(
        DedupScope.DATASET,
        parse=DedupScope,
        help="Where content is compared: within each source's dataset, or across all sources.",
        per_source=True,
    )
    log_level: LogLevel = setting(LogLevel.INFO, parse=LogLevel, help="Log level.")
    metrics_port: int | None = setting(
        None,
        parse=_port,
        help="Serve Prometheus metrics on 127.0.0.1 at this port.",
        default_text="off",
        commands=RUN,
    )
    metrics_interval: float = setting(
        60.0,
        parse=_number(float, 0.0, 86400.0),
        help="Seconds between `metrics` log lines; 0: none.",
        commands=RUN,
    )
    shutdown_timeout: float = setting(
        30.0,
        parse=_number(float, 0.0, 86400.0),
        help="Seconds to let in-flight work finish on SIGTERM.",
        commands=RUN,
    )
    retry_max_seconds: float = setting(
        60.0,
        parse=_number(float, 0.1, 86400.0),
        help="Longest back-off between retries of a failed step.",
    )

    @property
    def ledger_dir(self) -> Path:
        return self.state_path.parent


TABLE: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Settings)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}


ENV_PREFIX = "INGESTOR_"


def _parse(name: str, value: Any, origin: str) -> Any:
    spec = TABLE[name]
    try:
        return spec.parse(value)
    except (ValueError, TypeError) as exc:
        choices = f" (choose from {', '.join(spec.choices)})" if spec.choices else ""
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


def read_toml(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The top-level settings and the ``[[source]]`` tables of a config file.

    An ``[ingestor]`` table, if there is one, holds the settings (and may hold
    the sources); a ``[sampler]`` table is the sampler's and skipped here.
    """
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
    sources = section.get("source", data.get("source", []))
    if not isinstance(sources, list) or not all(isinstance(t, dict) for t in sources):
        raise SettingsError(f"config file {path}: source must be [[source]] tables")
    top = {k.replace("-", "_"): v for k, v in section.items() if k not in ("ingestor", "sampler", "source")}
    return top, [{k.replace("-", "_"): v for k, v in t.items()} for t in sources]


@dataclass(slots=True)
class Gathered:
    """Every value given, before the paths are finished: flags > environment > file."""

    merged: dict[str, Any]
    origins: dict[str, str]
    sources: list[dict[str, Any]]  # the [[source]] tables, as written
    config: Path | None
    given: dict[str, str]  # where each flag or environment value came from (not the file's)


def gather(flags: Mapping[str, Any], *, config: Path | None, environ: Mapping[str, str]) -> Gathered:
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    given: dict[str, str] = {}
    sources: list[dict[str, Any]] = []
    if config is None and environ.get(ENV_PREFIX + "CONFIG"):
        config = Path(environ[ENV_PREFIX + "CONFIG"])
    if config is not None:
        top, sources = read_toml(config)
        for key, value in top.items():
            if key not in TABLE:
                raise SettingsError(f"unknown setting {key!r} in config file {config}")
            merged[key] = _parse(key, value, f"value in {config}")
            origins[key] = f"file {config}"
    for key in TABLE:
        env_key = ENV_PREFIX + key.upper()
        if env_key in environ:
            merged[key] = _parse(key, environ[env_key], f"environment {env_key}")
            origins[key] = given[key] = "env " + env_key
    for key, value in flags.items():
        if value is None:
            continue
        if key not in TABLE:
            raise SettingsError(f"unknown setting {key!r}")
        flag = "--" + key.replace("_", "-")
        merged[key] = _parse(key, value, f"value of {flag}")
        origins[key] = given[key] = "flag " + flag
    return Gathered(merged, origins, sources, config, given)


def parse_value(name: str, value: Any, origin: str) -> Any:
    """A value of the table judged as the settings are (a ``[[source]]`` table's)."""
    return _parse(name, value, origin)


def load(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge the sources, validate every value, fill the path defaults."""
    return load_with_origins(flags, config=config, environ=environ, cwd=cwd)[0]


def load_with_origins(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[Settings, dict[str, str]]:
    """``load``, and where each value came from (``config show``): flag, environment, file, default.

    One landing dir: a config with ``[[source]]`` tables is read by ``sources.load``.
    """
    g = gather(flags, config=config, environ=os.environ if environ is None else environ)
    if g.sources:
        raise SettingsError(f"config file {g.config} has [[source]] tables: this reads one landing dir")
    return finish(g.merged, cwd or Path.cwd(), g.origins), fill_origins(g.origins)


def fill_origins(origins: dict[str, str]) -> dict[str, str]:
    for key in TABLE:
        origins.setdefault(key, "default (beside the landing dir)" if key in PATHS else "default")
    return origins


def absolute(path: Path, cwd: Path) -> Path:
    return Path(os.path.normpath(cwd / Path(os.path.expanduser(path))))


def finish(values: dict[str, Any], cwd: Path, origins: Mapping[str, str] | None = None) -> Settings:
    """One landing dir's settings: paths made absolute, defaults beside the landing dir, checked."""
    if "input" not in values:
        raise SettingsError("missing setting input: give --input DIR (or INGESTOR_INPUT)")
    for key in PATHS:
        if values.get(key) is not None:
            values[key] = absolute(values[key], cwd)
    base = values["input"].parent
    values.setdefault("warehouse", base / "warehouse")
    values.setdefault("manifests", base / "manifests")
    values.setdefault("state_path", base / "state" / "ledger.sqlite")
    settings = Settings(**values)
    check_paths(settings)
    unknown = fields_of(settings.layout) - FIELDS - {"source"}
    unknown = {f for f in unknown if "-" not in f}
    if unknown:
        origin = (origins or {}).get("layout", "value")
        raise SettingsError(
            f"invalid layout ({origin}): unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS)} "
            "(placeholders need a [[source]] path that has them)"
        )
    return settings


def _inside(child: Path, parent: Path) -> bool:
    c, p = os.path.realpath(child), os.path.realpath(parent)  # never raises: unresolvable parts stay
    return c == p or c.startswith(p.rstrip("/") + "/")


def check_paths(s: Settings) -> None:
    """Refuse paths that overlap or name the wrong kind of thing, before anything is touched."""
    if s.input == Path("/"):
        raise SettingsError("invalid input: the landing dir cannot be /")
    for name in ("warehouse", "manifests", "state_path", "samples"):
        other = getattr(s, name)
        if other is None:
            continue
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
    for name in TABLE:
        v = getattr(s, name)
        out[name] = str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
    return out
