"""Command line: ``ingestor run | replay | ...``; thin, everything real lives in the stages.

A bad flag or configuration value prints one line (``ingestor: error: ...``)
and exits 2; a fatal start-up problem (ledger of other directories, a second
daemon) logs one ``fatal`` line and exits 1.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

try:  # typer >= 0.2x vendors click as typer._click; earlier ones depend on click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[no-redef,import-not-found]

from ingestor import logs
from ingestor.daemon import Daemon
from ingestor.errors import Fatal, Refused
from ingestor.progress import BarProgress, LogProgress, Progress
from ingestor.rescan import landing_paths
from ingestor.settings import Settings, SettingsError, load, parse_path

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Land files dropped into a landing directory exactly once.",
)

# ----------------------------------------------------------------- shared options

# Paths are taken as text: typer's Path would turn "" into "." (the working directory),
# and settings refuses an empty path only if it sees it
InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="Landing directory to watch.")]
WarehouseOpt = Annotated[
    str | None, typer.Option(help="Warehouse directory. [default: <input>/../warehouse]")
]
ManifestsOpt = Annotated[str | None, typer.Option(help="Manifest directory. [default: <input>/../manifests]")]
StateOpt = Annotated[
    str | None, typer.Option("--state-path", help="SQLite ledger. [default: <input>/../state/ledger.sqlite]")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]
ModeOpt = Annotated[
    str | None, typer.Option(help="Completion detection: stability | sidecar. [default: stability]")
]
StabilityOpt = Annotated[
    float | None, typer.Option(help="Seconds a file must stay unchanged to be complete. [default: 2.0]")
]
SidecarOpt = Annotated[str | None, typer.Option(help="Sidecar suffix in sidecar mode. [default: .ok]")]
ScanOpt = Annotated[float | None, typer.Option(help="Seconds between reconciliation scans. [default: 60]")]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="Worker threads. [default: the cores, 2 to 4]")]
ProcessesOpt = Annotated[
    int | None,
    typer.Option(help="Lander processes; more than 1 uses more cores for many small files. [default: 1]"),
]
BatchOpt = Annotated[int | None, typer.Option(help="Files per batch (one group commit). [default: 1024]")]
DryRunOpt = Annotated[bool | None, typer.Option("--dry-run/--no-dry-run", help="Report, move nothing.")]
WatcherOpt = Annotated[str | None, typer.Option(help="auto | inotify | watchdog | poll. [default: auto]")]
LayoutOpt = Annotated[
    str | None, typer.Option(help="Warehouse path template. [default: ingest_date={date}/{relpath}]")
]
OnDupOpt = Annotated[str | None, typer.Option(help="quarantine | delete | keep. [default: quarantine]")]
DedupOpt = Annotated[str | None, typer.Option(help="content | path+content. [default: content]")]
IgnoreOpt = Annotated[
    str | None, typer.Option("--ignore-suffixes", help="Comma-separated. [default: .tmp,.part,.swp]")
]
LogLevelOpt = Annotated[str | None, typer.Option(help="debug | info | warning | error. [default: info]")]
MetricsPortOpt = Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")]
MetricsIntervalOpt = Annotated[
    float | None, typer.Option(help="Seconds between `metrics` log lines; 0: none. [default: 60]")
]
ShutdownOpt = Annotated[
    float | None, typer.Option(help="Seconds to let in-flight work finish on SIGTERM. [default: 30]")
]


def _settings(config: Path | None, **flags: Any) -> Settings:
    if flags.get("ignore_suffixes") is not None:
        flags["ignore_suffixes"] = flags["ignore_suffixes"]
    return load(flags, config=config)


def _run_daemon(settings: Settings, *, show_progress: bool = False, **kwargs: Any) -> int:
    logs.configure(settings.log_level.value)
    progress: Progress | None = None
    if show_progress:
        if sys.stderr.isatty():
            bar = BarProgress()
            logs.configure(settings.log_level.value, stream=bar.log_stream)
            progress = bar
        else:
            progress = LogProgress(logs.get_logger())
    try:
        return asyncio.run(Daemon(settings, progress=progress, **kwargs).run())
    finally:
        if isinstance(progress, BarProgress):
            progress.close()


# ----------------------------------------------------------------- commands


@app.command()
def run(
    input: InputOpt = None,
    warehouse: WarehouseOpt = None,
    manifests: ManifestsOpt = None,
    state_path: StateOpt = None,
    config: ConfigOpt = None,
    mode: ModeOpt = None,
    stability_seconds: StabilityOpt = None,
    sidecar_suffix: SidecarOpt = None,
    scan_interval: ScanOpt = None,
    concurrency: ConcurrencyOpt = None,
    processes: ProcessesOpt = None,
    batch_size: BatchOpt = None,
    dry_run: DryRunOpt = None,
    watcher: WatcherOpt = None,
    layout: LayoutOpt = None,
    on_duplicate: OnDupOpt = None,
    dedup: DedupOpt = None,
    ignore_suffixes: IgnoreOpt = None,
    log_level: LogLevelOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_interval: MetricsIntervalOpt = None,
    shutdown_timeout: ShutdownOpt = None,
) -> None:
    """Watch the landing directory and land every complete file exactly once."""
    flags = dict(locals())
    settings = _settings(flags.pop("config"), **flags)
    raise typer.Exit(_run_daemon(settings))


@app.command()
def replay(
    paths: Annotated[
        list[str] | None, typer.Argument(help="Files or dirs below the landing dir. [default: all]")
    ] = None,
    input: InputOpt = None,
    warehouse: WarehouseOpt = None,
    manifests: ManifestsOpt = None,
    state_path: StateOpt = None,
    config: ConfigOpt = None,
    mode: ModeOpt = None,
    stability_seconds: StabilityOpt = None,
    sidecar_suffix: SidecarOpt = None,
    concurrency: ConcurrencyOpt = None,
    processes: ProcessesOpt = None,
    batch_size: BatchOpt = None,
    dry_run: DryRunOpt = None,
    layout: LayoutOpt = None,
    on_duplicate: OnDupOpt = None,
    dedup: DedupOpt = None,
    ignore_suffixes: IgnoreOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Scan once and land everything complete, then exit; safe beside a running daemon.

    Exits 0 when everything complete was landed, 1 when a file could not be
    (it stays where it is; the log says why).
    """
    flags = dict(locals())
    targets = flags.pop("paths") or []
    settings = _settings(flags.pop("config"), **flags)
    try:
        rels = (
            landing_paths(settings.input, [parse_path("paths", t, origin="argument") for t in targets])
            if targets
            else None
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    raise typer.Exit(_run_daemon(settings, one_shot=True, paths=rels, show_progress=True))


@app.command()
def verify(
    warehouse: WarehouseOpt = None,
    manifests: ManifestsOpt = None,
    state_path: StateOpt = None,
    input: InputOpt = None,
    config: ConfigOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Audit manifest, warehouse and ledger against each other; exit 0 clean, 1 not.

    Give --warehouse, --manifests and --state-path, or --input (or --config) to
    use the defaults beside the landing dir.
    """
    from ingestor.verify import run_verify

    if input is None and config is None and None in (warehouse, manifests, state_path):
        raise SettingsError("verify needs --warehouse, --manifests and --state-path (or --input / --config)")
    if input is None and config is None:
        wh, mf, st = (
            parse_path(name, value)
            for name, value in (
                ("warehouse", warehouse),
                ("manifests", manifests),
                ("state_path", state_path),
            )
        )
    else:
        s = load(
            {"input": input, "warehouse": warehouse, "manifests": manifests, "state_path": state_path},
            config=config,
        )
        wh, mf, st = s.warehouse, s.manifests, s.state_path
    logs.configure("warning")
    raise typer.Exit(run_verify(wh, mf, st, as_json=json, out=sys.stdout))


@app.command("rebuild-ledger")
def rebuild_ledger(
    input: InputOpt = None,
    warehouse: WarehouseOpt = None,
    manifests: ManifestsOpt = None,
    state_path: StateOpt = None,
    config: ConfigOpt = None,
    dedup: DedupOpt = None,
    json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Rebuild a lost ledger from the manifests and the warehouse; exit 0 clean, 1 with problems.

    Run it with the daemon stopped and the settings the daemon runs with. It
    refuses a ledger that holds records. Records, content claims (within
    --dedup), destinations and kept duplicates come from the manifest lines;
    warehouse files no line names are reported, not adopted. Then run
    `ingestor verify`.
    """
    import orjson

    from ingestor.rebuild import rebuild, summary

    settings = _settings(
        config, input=input, warehouse=warehouse, manifests=manifests, state_path=state_path, dedup=dedup
    )
    logs.configure(settings.log_level.value)
    report = summary(rebuild(settings))
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


# ----------------------------------------------------------------- simulate, status, config show

from simulate.cli import app as simulate_app  # noqa: E402 - kept beside the commands it adds

app.add_typer(simulate_app, name="simulate")


@app.command()
def status(
    state_path: StateOpt = None,
    input: InputOpt = None,
    config: ConfigOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Also read a running daemon's gauges (files waiting, queue) from this port."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """What the ledger says: counts by state, duplicates, errors, oldest open and last landed file,
    files and bytes landed in the last minute and hour. Read-only; safe beside a running daemon.

    Give --state-path, or --input / --config for the ledger beside the landing dir
    (then the configured metrics_port, if any, is read too).
    """
    from ingestor.status import run_status

    port = metrics_port
    if state_path is None or input is not None or config is not None:
        if input is None and config is None:
            raise SettingsError("status needs --state-path FILE (or --input / --config)")
        s = load({"input": input, "state_path": state_path}, config=config)
        ledger = s.state_path
        port = metrics_port if metrics_port is not None else s.metrics_port
    else:
        ledger = parse_path("state_path", state_path)
    raise typer.Exit(run_status(ledger, as_json=json, out=sys.stdout, metrics_port=port))


config_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="The effective configuration.",
)
app.add_typer(config_app, name="config")


def _origins(flags: dict[str, Any], config: Path | None) -> dict[str, str]:
    """Where each setting came from, by the precedence ``settings.load`` applies."""
    import os

    from ingestor.settings import ENV_PREFIX, read_toml

    if config is None and os.environ.get(ENV_PREFIX + "CONFIG"):
        config = Path(os.environ[ENV_PREFIX + "CONFIG"])
    in_file = set(read_toml(config)) if config is not None else set()
    out = {}
    for key, value in flags.items():
        env_key = ENV_PREFIX + key.upper()
        if value is not None:
            out[key] = "flag --" + key.replace("_", "-")
        elif env_key in os.environ:
            out[key] = "env " + env_key
        elif key in in_file:
            out[key] = f"file {config}"
        elif key in ("warehouse", "manifests", "state_path"):
            out[key] = "default (beside the landing dir)"
        else:
            out[key] = "default"
    return out


def _toml_value(value: Any) -> str:
    """One TOML value on one line (tomli-w quotes and escapes; lists kept inline)."""
    import tomli_w

    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


@config_app.command("show")
def config_show(
    input: InputOpt = None,
    warehouse: WarehouseOpt = None,
    manifests: ManifestsOpt = None,
    state_path: StateOpt = None,
    config: ConfigOpt = None,
    mode: ModeOpt = None,
    stability_seconds: StabilityOpt = None,
    sidecar_suffix: SidecarOpt = None,
    scan_interval: ScanOpt = None,
    concurrency: ConcurrencyOpt = None,
    processes: ProcessesOpt = None,
    batch_size: BatchOpt = None,
    dry_run: DryRunOpt = None,
    watcher: WatcherOpt = None,
    layout: LayoutOpt = None,
    on_duplicate: OnDupOpt = None,
    dedup: DedupOpt = None,
    ignore_suffixes: IgnoreOpt = None,
    log_level: LogLevelOpt = None,
    metrics_port: MetricsPortOpt = None,
    metrics_interval: MetricsIntervalOpt = None,
    shutdown_timeout: ShutdownOpt = None,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object: {settings: {...}, origins: {...}}.")
    ] = False,
) -> None:
    """Print the effective configuration of `run` with the same flags, as TOML (or JSON).

    Precedence: flags > INGESTOR_* environment > --config TOML file > defaults.
    Each value says where it came from. An invalid value fails as `run` would:
    one line naming the setting, exit 2.
    """
    flags = dict(locals())  # first: only the options are local yet
    flags.pop("json")
    import orjson

    from ingestor.settings import describe

    settings = _settings(flags.pop("config"), **flags)
    values = describe(settings)
    origins = _origins({k: flags.get(k) for k in values}, config)
    if json:
        sys.stdout.write(orjson.dumps({"settings": values, "origins": origins}).decode() + "\n")
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
    sys.stdout.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    logs.configure("info")  # until a command configures its own level: errors are JSON on stderr too
    try:
        code = app(args=argv, prog_name="ingestor", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except ClickException as exc:
        print(f"ingestor: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except (SettingsError, Refused) as exc:
        print(f"ingestor: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Fatal as exc:
        logs.get_logger().critical("fatal", op=exc.op, path=exc.path, cause=exc.cause, hint=exc.hint)
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except Exception:  # a bug: one JSON line with the traceback, not a bare traceback
        logs.get_logger().critical("internal_error", exc_info=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
