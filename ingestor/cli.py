"""Command line: ``ingestor run | replay | verify | status | config show | rebuild-ledger | simulate``.

Thin: everything real lives in the stages. The flags of the commands that
take settings are made from the settings table (``settings.TABLE``): one row
per setting gives its flag, type, choices, help and default, so a setting
is never declared here. A bad flag or value prints one line
(``ingestor: error: ...``) and exits 2; so does a start refused for what the
operator must decide (``Refused``); a fatal start-up problem logs one
``fatal`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ingestor import command, logs, sources
from ingestor.errors import Fatal, Refused
from ingestor.progress import BarProgress, LogProgress, Progress
from ingestor.settings import (
    DEFAULTS,
    ENV_PREFIX,
    TABLE,
    Settings,
    SettingsError,
    describe,
    parse_path,
)
from simulate.cli import app as simulate_app

app = typer.Typer(**command.APP_STYLE)
command.root(app, "ingestor", "Land files dropped into a landing directory exactly once.")
app.add_typer(simulate_app, name="simulate")
config_app = command.group("The effective configuration.")
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="TOML configuration file; [[source]] tables for many landing dirs."),
]
SourceOpt = Annotated[
    str | None, typer.Option("--source", help="Only this source of the config (its name). [default: all]")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]

# ----------------------------------------------------------------- flags from the settings table

_TYPES = typing.get_type_hints(Settings)


def _flag_type(name: str) -> Any:
    """What typer parses a setting's flag as. Paths stay text (typer's Path turns "" into "."),
    and so do choices: the settings table judges every value, with one kind of message."""
    kind = _TYPES[name]
    if kind in (Path, tuple[str, ...]) or TABLE[name].choices:
        return str
    if kind == int | None:
        return int
    return kind


def _shown_default(name: str) -> str | None:
    spec = TABLE[name]
    if spec.default_text is not None:
        return spec.default_text
    if name not in DEFAULTS:
        return None  # required (--input): no default to show
    value = DEFAULTS[name]
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value.value if hasattr(value, "value") else value)


def flag(name: str, help_text: str | None = None) -> inspect.Parameter:
    """The typer option of one setting, from its row of the table."""
    spec = TABLE[name]
    long = "--" + name.replace("_", "-")
    kind = _flag_type(name)
    decls = [f"{long}/--no-{long[2:]}"] if kind is bool else [long, *([spec.short] if spec.short else [])]
    default = _shown_default(name)
    option = typer.Option(
        *decls,
        help=f"{help_text or spec.help} [env: {ENV_PREFIX}{name.upper()}]"
        + (f" [default: {default}]" if default is not None else ""),
        show_default=False,
        metavar="PATH" if _TYPES[name] is Path else f"[{'|'.join(spec.choices)}]" if spec.choices else None,
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def with_flags(names: list[str]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the flags of ``names``; it receives them as one ``flags`` dict (None: not given).

    The command's own parameters keep their place before the flags; typer
    reads the signature made here.
    """

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "flags"]
        params = [*(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own), *(flag(n) for n in names)]

        def wrapper(**kwargs: Any) -> None:
            flags = {n: kwargs.pop(n) for n in names}
            fn(flags=flags, **kwargs)

        wrapper.__name__, wrapper.__doc__, wrapper.__module__ = fn.__name__, fn.__doc__, fn.__module__
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def names_of(command_name: str) -> list[str]:
    return [name for name, spec in TABLE.items() if command_name in spec.commands]


def _config(path: str | None) -> Path | None:
    return None if path is None else parse_path("config", path)


# ----------------------------------------------------------------- the daemon's commands


def _load(flags: dict[str, Any], config: str | None, source: str | None = None) -> sources.Config:
    """The configuration (``--source``: only that source)."""
    cfg = sources.load(flags, config=_config(config))
    if source is not None:
        cfg = sources.only(cfg, source)
    return cfg


def _run_daemon(settings: sources.Config, *, show_progress: bool = False, **kwargs: Any) -> int:
    from ingestor.lifecycle import Daemon

    level = settings.settings.log_level.value
    logs.configure(level)
    progress: Progress | None = None
    if show_progress:
        if sys.stderr.isatty():
            bar = BarProgress()
            logs.configure(level, stream=bar.log_stream)
            progress = bar
        else:
            progress = LogProgress(logs.get_logger())
    try:
        return asyncio.run(Daemon(settings, progress=progress, **kwargs).run())
    finally:
        if isinstance(progress, BarProgress):
            progress.close()


@app.command()
@with_flags(names_of("run"))
def run(flags: dict[str, Any], config: ConfigOpt = None) -> None:
    """Watch the landing directory (or every source's) and land every complete file exactly once."""
    raise typer.Exit(_run_daemon(_load(flags, config)))


@app.command()
@with_flags(names_of("replay"))
def replay(
    flags: dict[str, Any],
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Files or dirs below a landing dir (or above landing dirs). [default: all]"),
    ] = None,
    config: ConfigOpt = None,
    source: SourceOpt = None,
) -> None:
    """Scan once and land everything complete, then exit; safe beside a running daemon.

    Exits 0 when everything complete was landed, 1 when a file could not be
    (it stays where it is; the log says why).
    """
    cfg = _load(flags, config, source)
    only = None
    if paths:
        targets = [parse_path("paths", t, origin="argument") for t in paths]
        try:
            only = sources.targets(cfg, targets)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    raise typer.Exit(_run_daemon(cfg, one_shot=True, only=only, show_progress=True))


@app.command("rebuild-ledger")
@with_flags([*("input", "warehouse", "manifests", "state_path"), "dedup", "log_level"])
def rebuild_ledger(flags: dict[str, Any], config: ConfigOpt = None, json: JsonOpt = False) -> None:
    """Rebuild a lost ledger from the manifests and the warehouse; exit 0 clean, 1 with problems.

    Run it with the daemon stopped and the settings the daemon runs with. It
    refuses a ledger that holds records. Records, content claims (within
    --dedup), destinations and kept duplicates come from the manifest lines;
    warehouse files no line names are reported, not adopted. Then run
    `ingestor verify`.
    """
    from ingestor.rebuild import rebuild, summary

    cfg = _load(flags, config)
    settings = cfg.settings
    logs.configure(settings.log_level.value)
    report = summary(rebuild(cfg))
    if json:
        sys.stdout.write(orjson.dumps(report).decode() + "\n")
    else:
        lines = [
            f"rebuilt {settings.state_path}: {report['records']} records, "
            f"{report['content_claims']} content claims, from {report['manifest_files']} manifest files"
        ]
        for kind, count in report["problems"].items():
            lines.append(f"{kind}: {count}")
            lines += [f"  {ex}" for ex in report["examples"][kind]]
        sys.stdout.write("\n".join(lines) + "\n")
    raise typer.Exit(1 if report["problems"] else 0)


# ----------------------------------------------------------------- reading what landed


@app.command()
@with_flags(["warehouse", "manifests", "state_path", "input"])
def verify(
    flags: dict[str, Any], config: ConfigOpt = None, json: JsonOpt = False, source: SourceOpt = None
) -> None:
    """Audit manifest, warehouse and ledger against each other; exit 0 clean, 1 not.

    Give --warehouse, --manifests and --state-path, or --input (or --config) to
    use the defaults beside the landing dir. With [[source]] tables every
    landing dir's warehouse and manifests are audited (--source: one source's),
    each against its own records, then the total.
    """
    from ingestor.verify import run_verify, run_verify_sources

    paths = ("warehouse", "manifests", "state_path")
    logs.configure("warning")
    if flags["input"] is None and config is None:
        if None in (flags[p] for p in paths):
            raise SettingsError(
                "verify needs --warehouse, --manifests and --state-path (or --input / --config)"
            )
        wh, mf, st = (parse_path(p, flags[p]) for p in paths)
        raise typer.Exit(run_verify(wh, mf, st, as_json=json, out=sys.stdout))
    cfg = _load(flags, config, source)
    if cfg.plain:
        s = cfg.settings
        raise typer.Exit(run_verify(s.warehouse, s.manifests, s.state_path, as_json=json, out=sys.stdout))
    raise typer.Exit(run_verify_sources(cfg, as_json=json, out=sys.stdout))


@app.command()
@with_flags(["state_path", "input"])
def status(
    flags: dict[str, Any],
    config: ConfigOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Also read a running daemon's gauges (files waiting, queue) from this port."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """What the ledger says: counts by state, duplicates, errors, oldest open and last landed file,
    files and bytes landed in the last minute and hour. Read-only; safe beside a running daemon.

    Give --state-path, or --input / --config for the ledger beside the landing dir
    (then the configured metrics_port, if any, is read too).
    """
    from ingestor.status import run_status

    port = metrics_port
    if flags["state_path"] is None or flags["input"] is not None or config is not None:
        if flags["input"] is None and config is None:
            raise SettingsError("status needs --state-path FILE (or --input / --config)")
        s = _load(flags, config).settings
        ledger = s.state_path
        port = metrics_port if metrics_port is not None else s.metrics_port
    else:
        ledger = parse_path("state_path", flags["state_path"])
    raise typer.Exit(run_status(ledger, as_json=json, out=sys.stdout, metrics_port=port))


def _toml_value(value: Any) -> str:
    """One TOML value on one line (tomli-w quotes and escapes; lists kept inline)."""
    import tomli_w

    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


@config_app.command("show")
@with_flags(names_of("run"))
def config_show(
    flags: dict[str, Any],
    config: ConfigOpt = None,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object: {settings: {...}, origins: {...}}.")
    ] = False,
) -> None:
    """Print the effective configuration of `run` with the same flags, as TOML (or JSON).

    Precedence: flags > INGESTOR_* environment > --config TOML file > defaults.
    Each value says where it came from. An invalid value fails as `run` would:
    one line naming the setting, exit 2.
    """
    cfg = _load(flags, config)
    origins = dict(cfg.origins)
    values = describe(cfg.settings)
    listed = [_source_view(src) for src in cfg.sources] if not cfg.plain else []
    if not cfg.plain:
        for key in ("input", "warehouse", "manifests", "samples"):
            values.pop(key, None)
    if json:
        out: dict[str, Any] = {"settings": values, "origins": origins}
        if listed:
            out["sources"] = listed
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
        return
    lines = [
        "# ingestor: effective configuration (flags > INGESTOR_* env > TOML file > defaults)",
        "[ingestor]",
    ]
    for key, value in values.items():
        if value is None:
            lines.append(f"# {key} is not set  # {origins[key]}")
        else:
            lines.append(f"{key} = {_toml_value(value)}  # {origins[key]}")
    for view in listed:
        lines += ["", "[[source]]"]
        for key, value in view.items():
            if key == "landing_dirs":
                lines.append(f"# landing dirs matched now: {len(value)}")
                lines += [f"#   {d}" for d in value]
            elif value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    sys.stdout.write("\n".join(lines) + "\n")


def _source_view(src: sources.Source) -> dict[str, Any]:
    """One source resolved: its settings (the per-source ones), and its landing dirs now."""
    values = describe(src.settings)
    view: dict[str, Any] = {"name": src.name, "path": src.path.text}
    for key, spec in TABLE.items():
        if spec.per_source and key != "input":
            view[key] = values.get(key)
    view["landing_dirs"] = [str(site.landing) for site in src.sites()]
    return view


# the commands on the record (registered on ``app`` by importing them; they use this module)
from ingestor import cli_export, cli_lookup  # noqa: E402,F401

# ----------------------------------------------------------------- entry point


def _one_line(exc: Exception) -> int:
    print(f"ingestor: error: {exc}", file=sys.stderr)
    return 2


def _fatal(exc: Fatal) -> int:
    logs.get_logger().critical("fatal", op=exc.op, path=exc.path, cause=exc.cause, hint=exc.hint)
    return 1


def main(argv: list[str] | None = None) -> None:
    logs.configure("info")  # until a command configures its own level: errors are JSON on stderr too
    try:
        code = command.main(
            app, "ingestor", argv, {SettingsError: _one_line, Refused: _one_line, Fatal: _fatal}
        )
    except Exception:  # a bug: one JSON line with the traceback, not a bare traceback
        logs.get_logger().critical("internal_error", exc_info=True)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    # ``python -m ingestor.cli``: this file runs as ``__main__``, and the modules that register
    # commands (cli_export, cli_lookup) register them on ``ingestor.cli``, a second copy: run that
    from ingestor import cli

    cli.main()
