"""``sampler`` command line (thin): parse, validate once into ``Settings``, run.

A bad flag value prints one line, ``sampler: error: ...``, on stderr and
exits 2 (click's multi-line usage box is not shown).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ingestor import command
from ingestor.logs import LEVELS, configure
from sampler.config import Config, ConfigError, check_state_dir
from sampler.config import read as read_config
from sampler.limits import Limits
from sampler.run import run as run_sampler
from sampler.settings import Plain, Settings, parse_size

app = typer.Typer(**command.APP_STYLE)
command.root(app, "sampler", "Follow the ingestor's manifest and write small same-format samples.")


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _readable_dir(path: Path, flag: str) -> None:
    """A directory the sampler can list, or a usage error (exit 2) before anything is created."""
    try:
        with os.scandir(path):
            pass
    except FileNotFoundError:
        raise typer.BadParameter(f"{path}: no such directory", param_hint=flag) from None
    except NotADirectoryError:
        raise typer.BadParameter(f"{path}: not a directory", param_hint=flag) from None
    except OSError as exc:
        raise typer.BadParameter(f"{path}: cannot be read: {exc.strerror}", param_hint=flag) from None


def _level(value: str) -> str:
    if value.lower() not in LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LEVELS)}")
    return value.lower()


class SettingsError(ValueError):
    """A usage error found after parsing (one line, exit 2)."""


def _nested(a: Path, b: Path) -> bool:
    ra, rb = os.path.realpath(a), os.path.realpath(b)
    return ra == rb or ra.startswith(rb.rstrip("/") + "/") or rb.startswith(ra.rstrip("/") + "/")


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(Path.cwd() / path.expanduser()))


def _plain(manifests: Path | None, samples: Path | None, warehouse: Path | None, ckpt: Path | None) -> Plain:
    if manifests is None:
        raise SettingsError("missing option '--manifests': give --manifests DIR, or --config FILE")
    if samples is None:
        raise SettingsError("missing option '--samples': give --samples DIR with --manifests")
    _readable_dir(manifests, "'--manifests'")
    manifests, samples = _absolute(manifests), _absolute(samples)
    warehouse = _absolute(warehouse) if warehouse is not None else manifests.parent / "warehouse"
    for name, other in (("--manifests", manifests), ("--warehouse", warehouse)):
        if _nested(samples, other):
            raise SettingsError(
                f"--samples {samples} and {name} {other} are the same directory or one inside the other"
            )
    ckpt = _absolute(ckpt) if ckpt is not None else samples / ".sampler-checkpoint.json"
    return Plain(manifests, warehouse, samples, ckpt)


def _from_config(
    path: Path, state_dir: Path | None, plain_flags: dict[str, Path | None]
) -> tuple[Config, Path]:
    given = [name for name, value in plain_flags.items() if value is not None]
    if given:
        raise SettingsError(
            f"{given[0]} and --config (or SAMPLER_CONFIG) together: the config file's sources "
            "name the manifests, warehouse and samples dirs, and checkpoints go in --state-dir"
        )
    cfg = read_config(_absolute(path))
    table_dir = cfg.sampler.get("state_dir")
    if table_dir is not None and not (isinstance(table_dir, str) and table_dir.strip()):
        raise SettingsError(f"config file {cfg.path}: [sampler] state_dir must be a path, not {table_dir!r}")
    chosen = state_dir if state_dir is not None else Path(table_dir) if table_dir else cfg.state_dir
    if chosen is None:
        raise SettingsError(
            f"config file {cfg.path}: no state dir for the checkpoints: "
            "set state_path (the ledger) or [sampler] state_dir, or give --state-dir"
        )
    chosen = _absolute(chosen)
    check_state_dir(cfg.sources, chosen)
    return cfg, chosen


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="SAMPLER_CONFIG",
            help="The ingestor's TOML config: follow every source's manifests dirs "
            "(not with --manifests). [env: SAMPLER_CONFIG]",
        ),
    ] = None,
    manifests: Annotated[
        Path | None,
        typer.Option(help="The ingestor's manifests directory (YYYY/MM/DD/HH/manifest.jsonl)."),
    ] = None,
    samples: Annotated[
        Path | None, typer.Option(help="Where samples are written (created if missing).")
    ] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(help="Warehouse root that manifest paths lie under. [default: MANIFESTS/../warehouse]"),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Records kept per sample.")] = 100,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file. [default: SAMPLES/.sampler-checkpoint.json]"),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="--config: the dir of the checkpoints, one per manifests dir. "
            "[default: [sampler] state_dir, else <state_path dir>/sampler]"
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow/--once", help="Keep tailing, or process what is there and exit."),
    ] = False,
    max_bytes: Annotated[
        int,
        typer.Option(
            parser=_size,
            metavar="SIZE",
            help="Input read per file, decompressed bytes included (64MiB, 1G...).",
        ),
    ] = "64MiB",  # type: ignore[assignment]  # parsed by _size
    max_seconds: Annotated[float, typer.Option(min=0.001, help="Time allowed per file.")] = 30.0,
    poll_interval: Annotated[
        float, typer.Option(min=0.01, help="--follow: seconds between passes with no event.")
    ] = 5.0,
    metrics_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between sampler_metrics log lines.")
    ] = 60.0,
    retire_grace: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds an hour file stays open past its 60 s late-append window (clock skew).",
        ),
    ] = 240.0,
    log_level: Annotated[
        str, typer.Option(callback=_level, help="debug, info, warning, error, critical.")
    ] = "info",
) -> None:
    """Sample every ingested file the manifests list, from the checkpoint on."""
    plain: Plain | None = None
    cfg: Config | None = None
    chosen: Path | None = None
    if config is None:
        if state_dir is not None:
            raise SettingsError("--state-dir goes with --config; with --manifests give --checkpoint")
        plain = _plain(manifests, samples, warehouse, checkpoint)
    else:
        flags = {
            "--manifests": manifests,
            "--samples": samples,
            "--warehouse": warehouse,
            "--checkpoint": checkpoint,
        }
        cfg, chosen = _from_config(config, state_dir, flags)
    settings = Settings(
        limits=Limits(rows=rows, max_bytes=max_bytes, max_seconds=max_seconds),
        plain=plain,
        config=cfg,
        state_dir=chosen,
        follow=follow,
        poll_interval=poll_interval,
        metrics_interval=metrics_interval,
        retire_grace=retire_grace,
        log_level=log_level,
    )
    configure(log_level)
    raise typer.Exit(run_sampler(settings))


def _one_line(exc: Exception) -> int:
    print(f"sampler: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return command.main(app, "sampler", argv, {SettingsError: _one_line, ConfigError: _one_line})


if __name__ == "__main__":
    sys.exit(main())
