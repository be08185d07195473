"""``ingestor simulate ...``: real upstream traffic into a landing directory.

Thin wrappers over ``simulate.traffic`` and ``simulate.tree`` (the same
generators the tests and benchmarks use). Each command prints one summary line (files, bytes,
seconds), or one JSON object with ``--json``, and exits 0; ``cross-fs``
exits 1 if anything it dropped did not land.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ingestor import command, logs
from ingestor.settings import Settings, SettingsError, load
from ingestor.units import human_bytes, parse_size
from simulate import traffic
from simulate import tree as tree_mod

app = command.group("Generate real upstream traffic into a landing directory (demos, tests, benchmarks).")


def _size(value: Any) -> int:
    """``4096``, ``4KiB``/``4K`` (1024), ``4KB`` (1000), ``1M``, ``2GB``... (the sampler's parser)."""
    try:
        return parse_size(str(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


IntoOpt = Annotated[
    Path, typer.Option("--into", help="Landing directory to write into (created if missing).")
]
CountOpt = Annotated[int, typer.Option(min=1, help="Number of files.")]
SizeOpt = Annotated[
    int, typer.Option(parser=_size, metavar="SIZE", help="Bytes per file: 4096, 4KiB, 1M, 2GB.")
]
PrefixOpt = Annotated[str | None, typer.Option(help="File name prefix. [default: per command]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")]


def _emit(summary: dict[str, Any], line: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_APPEND_NEWLINE))
    else:
        print(line)
    sys.stdout.flush()


def _report(rep: traffic.Report, into: Path, as_json: bool, extra: str = "") -> None:
    summary = {**rep.summary(), "into": str(into.absolute()), "distinct_contents": len(rep.contents)}
    line = (
        f"{rep.what}: {rep.files} files, {human_bytes(rep.bytes)} ({rep.bytes} bytes) "
        f"in {rep.seconds:.3f} s into {into}{extra}"
    )
    _emit(summary, line, as_json)


def _prefix(kwargs: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    if prefix is not None:
        kwargs["prefix"] = prefix
    return kwargs


@app.command("slow-copy")
def slow_copy(
    src: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, readable=True, help="File to copy, like a slow scp."),
    ],
    into: IntoOpt,
    chunk: Annotated[int, typer.Option(parser=_size, metavar="SIZE", help="Bytes written per step.")] = 65536,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds to pause after each chunk.")] = 0.2,
    name: Annotated[str | None, typer.Option(help="Name in the landing dir. [default: SRC's name]")] = None,
    json: JsonOpt = False,
) -> None:
    """Copy SRC into the landing dir chunk by chunk, pausing between chunks (a slow upload)."""
    rep = traffic.slow_copy(src, into, chunk=chunk, interval=interval, name=name)
    _report(rep, into, json, f" ({human_bytes(chunk)} every {interval:g} s)")


@app.command("rename-tmp")
def rename_tmp(
    into: IntoOpt,
    count: CountOpt = 10,
    size: SizeOpt = 4096,
    prefix: PrefixOpt = None,
    json: JsonOpt = False,
) -> None:
    """Write NAME.tmp, close it, rename it to NAME (rsync, most SFTP clients)."""
    rep = traffic.rename_tmp(into, **_prefix({"count": count, "size": size}, prefix))
    _report(rep, into, json)


@app.command()
def duplicates(
    into: IntoOpt,
    count: CountOpt = 5,
    size: SizeOpt = 4096,
    prefix: PrefixOpt = None,
    json: JsonOpt = False,
) -> None:
    """Send the same bytes COUNT times under new names (an upstream that re-sends)."""
    rep = traffic.duplicates(into, **_prefix({"count": count, "size": size}, prefix))
    _report(rep, into, json, " (one content)")


@app.command()
def sidecar(
    into: IntoOpt,
    count: CountOpt = 5,
    size: SizeOpt = 4096,
    ok_first: Annotated[
        bool, typer.Option("--ok-first", help="Write the sidecar before the data (a racy upstream).")
    ] = False,
    suffix: Annotated[str, typer.Option(help="Sidecar suffix (as --sidecar-suffix of `run`).")] = ".ok",
    prefix: PrefixOpt = None,
    json: JsonOpt = False,
) -> None:
    """Data files each announced by a sidecar FILE.ok (land them with `run --mode sidecar`)."""
    if not suffix.startswith(".") or "/" in suffix or len(suffix) < 2:
        raise typer.BadParameter(f"{suffix!r} is not a suffix like '.ok'", param_hint="'--suffix'")
    kwargs = _prefix({"count": count, "size": size, "ok_first": ok_first, "suffix": suffix}, prefix)
    rep = traffic.sidecar(into, **kwargs)
    order = "sidecar first" if ok_first else "data first"
    _report(rep, into, json, f" (+{rep.files} {suffix} sidecars, {order})")


@app.command()
def burst(
    into: IntoOpt,
    count: Annotated[int, typer.Option(min=1, help="Number of files.")],
    size: SizeOpt = 4096,
    subdirs: Annotated[int, typer.Option(min=0, help="Spread the files over this many subdirectories.")] = 0,
    prefix: PrefixOpt = None,
    json: JsonOpt = False,
) -> None:
    """Many small files as fast as possible, each written then renamed into place."""
    rep = traffic.burst(into, **_prefix({"count": count, "size": size, "subdirs": subdirs}, prefix))
    _report(rep, into, json, f" ({subdirs} subdirs)" if subdirs else "")


@app.command()
def tree(
    root: Annotated[
        str,
        typer.Option(
            metavar="DIR", help="Top of the tree: DIR/VENDOR/DATASET/VERSION/raw/envK/ (created if missing)."
        ),
    ],
    vendors: Annotated[int, typer.Option(min=1, help="Vendor dirs.")] = 2,
    datasets: Annotated[int, typer.Option(min=1, help="Dataset dirs per vendor.")] = 2,
    versions: Annotated[int, typer.Option(min=1, help="Version dirs per dataset (1.0, 2.0...).")] = 1,
    envs: Annotated[int, typer.Option(min=1, help="env dirs per version's raw dir.")] = 2,
    files: Annotated[int | None, typer.Option(min=1, help="Files per env dir. [default: 5]")] = None,
    total: Annotated[
        int | None, typer.Option(min=1, help="Total files, spread over the env dirs (instead of --files).")
    ] = None,
    size: SizeOpt = 4096,
    mix: Annotated[
        str,
        typer.Option(
            metavar="WRITER=WEIGHT,...",
            help="Writers: temp (temp_NAME renamed to NAME when complete), slow (NAME in chunks, "
            "open until complete), direct (NAME in one write).",
        ),
    ] = "temp=1,slow=1,direct=1",
    chunk: Annotated[
        int, typer.Option(parser=_size, metavar="SIZE", help="Bytes per write of the temp and slow writers.")
    ] = 1024,
    interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between two rounds of chunks (one per open file).")
    ] = 0.01,
    parallel: Annotated[int, typer.Option(min=1, help="Files open for writing at once.")] = 4,
    new_dirs: Annotated[
        int, typer.Option(min=0, help="Datasets (vendor to env0) made while the traffic runs.")
    ] = 0,
    rate: Annotated[
        float | None, typer.Option(help="Files started per second at most. [default: no limit]")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Same seed, same paths and bytes. [default: random]")
    ] = None,
    duplicates: Annotated[
        int, typer.Option(min=0, help="Files also written, byte for byte, into another dataset.")
    ] = 0,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object, with every path's sha256 and the dataset dirs.")
    ] = False,
) -> None:
    """Files into ROOT/VENDOR/DATASET/VERSION/raw/envK/ as real upstreams write them (temp_, slow, direct)."""
    if files is not None and total is not None:
        raise typer.BadParameter("give --files or --total, not both", param_hint="'--total'")
    try:
        weights = tree_mod.parse_mix(mix)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--mix'") from None
    try:
        rep = tree_mod.tree(
            root, vendors=vendors, datasets=datasets, versions=versions, envs=envs,
            files=5 if files is None else files, total=total, size=size, mix=weights, chunk=chunk,
            interval=interval, parallel=parallel, new_dirs=new_dirs, rate=rate, seed=seed,
            duplicates=duplicates,
        )  # fmt: skip
    except tree_mod.TreeError as exc:
        raise SettingsError(f"simulate tree: {exc}") from None
    w = ", ".join(f"{n} {name}" for name, n in rep.writers().items())
    gone = f", {len(rep.vanished)} temp_ files VANISHED before their rename" if rep.vanished else ""
    line = (
        f"tree: {rep.files} files, {human_bytes(rep.bytes)} ({rep.bytes} bytes) in {rep.seconds:.3f} s "
        f"into {rep.root} ({len(rep.dataset_dirs)} datasets, {len(rep.new_dataset_dirs)} made while writing, "
        f"{w}, {rep.duplicates} duplicates, seed {rep.seed}{gone})"
    )
    _emit(rep.listing(), line, json)


@app.command("cross-fs")
def cross_fs(
    landing: Annotated[
        Path | None,
        typer.Option(
            help="Landing dir on another filesystem than the warehouse. [default: a fresh dir in /dev/shm]"
        ),
    ] = None,
    warehouse: Annotated[
        Path | None,
        typer.Option(help="Warehouse; manifests and state go beside it. [default: a fresh dir in the cwd]"),
    ] = None,
    count: CountOpt = 10,
    size: SizeOpt = 256 << 10,
    keep_landing: Annotated[
        bool, typer.Option("--keep-landing", help="Keep the /dev/shm landing dir this command made.")
    ] = False,
    log_level: Annotated[
        str, typer.Option(help="Log level of the landing run (JSON on stderr).")
    ] = "warning",
    json: JsonOpt = False,
) -> None:
    """Land files from a landing dir on another filesystem (tmpfs) into the warehouse.

    Drops COUNT files into the landing dir, runs the one-shot landing
    (`ingestor replay`'s code), checks every file reached the warehouse and
    the manifest, and says which filesystems it used. Exit 1 if anything did
    not land.
    """
    if landing is not None and warehouse is not None and _device(landing) == _device(warehouse):
        raise SettingsError(f"cross-fs: {landing} and {warehouse} are on the same filesystem")
    if warehouse is None:
        warehouse = Path(tempfile.mkdtemp(prefix="ingestor-cross-fs-", dir=Path.cwd())) / "warehouse"
    warehouse = warehouse.absolute()
    warehouse.mkdir(parents=True, exist_ok=True)
    made_landing = landing is None
    try:
        landing = traffic.other_filesystem_dir(warehouse) if landing is None else landing.absolute()
    except (ValueError, OSError) as exc:
        raise SettingsError(f"cross-fs: {exc}") from None
    landing.mkdir(parents=True, exist_ok=True)
    if os.stat(landing).st_dev == os.stat(warehouse).st_dev:
        raise SettingsError(f"cross-fs: {landing} and {warehouse} are on the same filesystem")
    settings = _cross_fs_settings(landing, warehouse, log_level)
    logs.configure(settings.log_level.value)
    rep = traffic.cross_fs(settings, count=count, size=size, land=_land_once)
    if made_landing and not keep_landing and rep.left_in_landing == 0:
        shutil.rmtree(landing, ignore_errors=True)  # drained; only empty dirs are left in /dev/shm
    summary = rep.summary()
    lf, wf = rep.landing_fs, rep.warehouse_fs
    verdict = "landed" if rep.ok else f"NOT ALL LANDED ({rep.landed} landed, exit {rep.exit_code})"
    line = (
        f"cross-fs: {rep.dropped.files} files, {human_bytes(rep.dropped.bytes)} ({rep.dropped.bytes} bytes) "
        f"{verdict} in {summary['seconds']:.3f} s "
        f"from {lf.fstype} ({landing}, mount {lf.mount_point}, dev {lf.device}) "
        f"to {wf.fstype} ({warehouse}, mount {wf.mount_point}, dev {wf.device})"
    )
    _emit(summary, line, json)
    raise typer.Exit(0 if rep.ok else 1)


def _land_once(settings: Settings) -> int:
    """`ingestor replay`'s landing, in this process (the CLI layer is where the daemon is run)."""
    import asyncio

    from ingestor.lifecycle import Daemon

    return asyncio.run(Daemon(settings, one_shot=True).run())


def _device(path: Path) -> int:
    """st_dev of ``path``, or of its nearest existing ancestor (where it would be made)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.stat(p).st_dev


def _cross_fs_settings(landing: Path, warehouse: Path, log_level: str) -> Settings:
    """A private layout beside the warehouse; the environment's INGESTOR_* settings are not read."""
    base = warehouse.parent
    flags = {
        "input": landing,
        "warehouse": warehouse,
        "manifests": base / "manifests",
        "state_path": base / "state" / "ledger.sqlite",
        "stability_seconds": 0.0,  # the files are renamed into place: complete when they appear
        "log_level": log_level,
    }
    return load(flags, environ={})
