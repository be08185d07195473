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
from sampler.limits import Limits
from sampler.run import run as run_sampler
from sampler.settings import Settings, parse_size

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


@app.command()
def run(
    manifests: Annotated[
        Path,
        typer.Option(help="The ingestor's manifests directory (YYYY/MM/DD/HH/manifest.jsonl)."),
    ],
    samples: Annotated[Path, typer.Option(help="Where samples are written (created if missing).")],
    warehouse: Annotated[
        Path | None,
        typer.Option(help="Warehouse root that manifest paths lie under. [default: MANIFESTS/../warehouse]"),
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Records kept per sample.")] = 100,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file. [default: SAMPLES/.sampler-checkpoint.json]"),
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
    _readable_dir(manifests, "'--manifests'")
    settings = Settings(
        manifests=manifests,
        samples=samples,
        warehouse=warehouse if warehouse is not None else manifests.absolute().parent / "warehouse",
        checkpoint=checkpoint if checkpoint is not None else samples / ".sampler-checkpoint.json",
        limits=Limits(rows=rows, max_bytes=max_bytes, max_seconds=max_seconds),
        follow=follow,
        poll_interval=poll_interval,
        metrics_interval=metrics_interval,
        retire_grace=retire_grace,
        log_level=log_level,
    )
    configure(log_level)
    raise typer.Exit(run_sampler(settings))


def main(argv: list[str] | None = None) -> int:
    return command.main(app, "sampler", argv)


if __name__ == "__main__":
    sys.exit(main())
