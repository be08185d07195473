"""The manifests dirs the sampler follows, and where each of their lines' samples go.

A *stream* is one manifests dir: its ``Tail``, its checkpoint, and the
``Sampler`` of each target its lines go to. A *target* is a (warehouse root,
samples root) pair: a source's ``warehouse`` and ``samples`` templates
rendered with the values its manifests dir matched (``{"vendor": "sp",
...}``). With ``--manifests`` there is one stream with one fixed target.

Discovery (``Streams.refresh``). Every source's ``manifests`` template is
expanded (``Template.expand``: existing dirs only, no symlink followed below
its literal head); each dir found becomes a stream once and stays. With a
watch, the dirs where a new match can appear (``Template.levels``, and the
nearest existing ancestor of a head not made yet) are watched first, again
until a listing made after the watches finds no new level: a dataset made in
one go (``mkdir -p .../1.0/manifests``) is either in that listing or raises
an event, never neither.

Routing (``Stream.route``). A record goes to the target of its source rendered
with the dir's values. The ingestor's ``source`` and ``dataset`` keys of a
line are used only when the dir alone does not decide: several sources share
the manifests dir (``source`` picks one), or a template uses a placeholder
the manifests template lacks (``dataset`` gives it, and must agree with the
dir's values). A line that cannot be routed is rejected: logged, counted,
passed.

Checks when a target is first used (``TargetRefused``). Its samples root,
resolved, must not be, hold or lie in its warehouse root, a manifests dir
found, or another warehouse's samples root: the overlaps that only real
values or symlinks make, which ``config.check`` cannot see. A new manifests
dir inside a samples root in use is refused the same way.

Checkpoints. ``--manifests``: the one ``--checkpoint`` file. ``--config``:
``<state dir>/<readable tail>.<hash>.json`` per manifests dir
(``checkpoint_name``), which names its dir inside (``checkpoint``).

Failures. In ``--config`` mode a stream that fails (its warehouse
unmounted, its samples disk full, its checkpoint corrupt, a target refused)
is logged once (``stream_failed``) and retried at the next pass while the
others go on; its position stays at the last line done. With
``--manifests`` the run loop stops instead (exit 1: systemd retries).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.manifest import ManifestRecord
from ingestor.templates import valid_value
from sampler import checkpoint
from sampler.config import Source
from sampler.limits import Limits
from sampler.sample import Sampler
from sampler.settings import Plain
from sampler.tail import Tail
from sampler.watch import ManifestWatch

PLAIN_SOURCE = "default"  # the source label with --manifests: the ingestor's name for a plain landing dir
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LEVEL_ROUNDS = 8  # watch-then-list rounds per refresh; a tree still growing is caught by its events


class StreamError(RuntimeError):
    """A stream that cannot go on for now (the message is one line)."""


class TargetRefused(StreamError):
    """A samples root that overlaps a warehouse, a manifests dir or another samples root."""


class Unroutable(ValueError):
    """A line whose target cannot be told; it is rejected, not sampled."""


@dataclass(frozen=True, slots=True)
class Target:
    source: str  # the source's name ("" unnamed)
    warehouse: Path
    samples: Path


def checkpoint_name(manifests: Path) -> str:
    """``sp-gics-1.0-manifests.<16 hex>.json``: the dir's last components, then a hash of it all."""
    digest = hashlib.sha256(os.fsencode(manifests)).hexdigest()[:16]
    tail = _UNSAFE.sub("_", "-".join(manifests.parts[-4:])).lstrip(".-")[:96]
    return f"{tail}.{digest}.json"


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


class Stream:
    """One manifests dir. Owned by the run loop only (no lock)."""

    def __init__(
        self,
        manifests: Path,
        routes: list[tuple[Source, dict[str, str]]],
        ckpt_path: Path,
        *,
        key: str | None,
        fixed: Target | None,
        log: Any,
        grace_s: float,
    ) -> None:
        self.manifests = manifests
        self.real = os.path.realpath(manifests)
        self.ckpt_path = ckpt_path
        self.log = log
        self.tail = Tail(manifests, checkpoint.load(ckpt_path, key), log=log, grace_s=grace_s)
        self.saved = self.tail.checkpoint()
        self.last_save = time.monotonic()
        self.samplers: dict[Target, Sampler] = {}
        self.last_ingested_at: str | None = None  # of the last record processed (metrics: lag seconds)
        self.routes: list[tuple[Source, dict[str, str]]] = []
        self._plain = fixed
        self.fixed = fixed
        for source, values in routes:
            self.add_route(source, values)

    @property
    def label(self) -> str:
        """The source name for metrics: the one source, or the names of those sharing the dir."""
        if self._plain is not None:
            return PLAIN_SOURCE
        return ",".join(sorted({s.name for s, _ in self.routes}))

    def add_route(self, source: Source, values: Mapping[str, str]) -> None:
        if any(s is source for s, _ in self.routes):
            return
        self.routes.append((source, dict(values)))
        self.fixed = self._plain
        if self.fixed is None and len(self.routes) == 1:
            needed = set(source.warehouse.names) | set(source.samples.names)
            if needed <= values.keys():
                self.fixed = _target(source, values)

    def route(self, rec: ManifestRecord) -> Target:
        """The target of one record (its ``source`` and ``dataset`` read only when the dir does not decide)."""
        if self.fixed is not None:
            return self.fixed
        name, dataset = rec.source_name, rec.dataset
        if len(self.routes) == 1:
            source, values = self.routes[0]
        else:
            names = sorted(s.name for s, _ in self.routes)
            if not isinstance(name, str):
                raise Unroutable(f"sources {names} share this manifests dir and the line names none")
            found = [(s, v) for s, v in self.routes if s.name == name]
            if not found:
                raise Unroutable(f"the line's source {name!r} is not one of {names}, which share this dir")
            source, values = found[0]
        values = dict(values)
        given = dataset if isinstance(dataset, dict) else {}
        for k, said in given.items():
            if k in values and said != values[k]:
                raise Unroutable(f"the line's dataset says {k}={said!r}, the manifests dir {values[k]!r}")
        needed = (set(source.warehouse.names) | set(source.samples.names)) - values.keys()
        for k in sorted(needed):
            v: object = given.get(k)
            if not (isinstance(v, str) and valid_value(v)):
                raise Unroutable(
                    f"no valid value for {{{k}}}: not in the manifests dir, nor in the line's dataset"
                )
            values[k] = v
        return _target(source, values)

    def save(self) -> None:
        """fsync the samples written, then the checkpoint (only when it moved)."""
        for sampler in self.samplers.values():
            sampler.sync()
        ckpt = self.tail.checkpoint()
        if ckpt != self.saved:
            checkpoint.save(self.ckpt_path, ckpt)
            self.saved = ckpt
        self.last_save = time.monotonic()

    def close(self) -> None:
        """Close every sampler (a later use opens them again); the first error is raised after."""
        samplers, self.samplers = self.samplers, {}
        error: OSError | None = None
        for sampler in samplers.values():
            try:
                sampler.close()
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise error


def _target(source: Source, values: Mapping[str, str]) -> Target:
    return Target(source.name, source.warehouse.render(values), source.samples.render(values))


class Streams:
    """Every stream, found and kept. Owned by the run loop only (no lock)."""

    def __init__(
        self,
        sources: tuple[Source, ...],
        *,
        plain: Plain | None,
        state_dir: Path | None,
        limits: Limits,
        log: Any,
        grace_s: float,
        on_failure: Callable[[str], None] = lambda label: None,
    ) -> None:
        self.sources = sources
        self.on_failure = on_failure
        self.plain = plain
        self.state_dir = state_dir
        self.limits = limits
        self.log = log
        self.grace_s = grace_s
        self.streams: dict[Path, Stream] = {}
        self.failed: dict[Path, str] = {}  # manifests dir -> why, said once per episode
        self.targets: dict[Target, str] = {}  # in use -> its samples root resolved
        self._told: set[Path] = set()  # directories refused by expand, said once
        self.levels: set[Path] = set()

    # ------------------------------------------------------------- discovery

    def start(self) -> None:
        """``--manifests``: make the one stream now (its checkpoint errors are fatal)."""
        p = self.plain
        if p is not None:
            target = Target(PLAIN_SOURCE, p.warehouse, p.samples)
            self.streams[p.manifests] = Stream(
                p.manifests, [], p.checkpoint, key=None, fixed=target, log=self.log, grace_s=self.grace_s
            )

    def refresh(self, watch: ManifestWatch | None = None) -> None:
        """Find new manifests dirs; with ``watch``, watch where more can appear and every tail's dirs."""
        if watch is not None and self.sources:
            levels = self._levels()
            for _ in range(_LEVEL_ROUNDS):
                if levels <= watch.watched():  # all watched before this listing: nothing new can hide
                    break
                watch.watch_only(self._tree_dirs(), levels)
                levels = self._levels()
            self.levels = levels
        found: dict[Path, list[tuple[Source, dict[str, str]]]] = {}
        for source in self.sources:
            for path, values in source.manifests.expand(self._refused):
                found.setdefault(path, []).append((source, values))
        for path, routes in found.items():
            if path in self.streams:
                for source, values in routes:
                    self.streams[path].add_route(source, values)
            elif (stream := self._open(path, routes)) is not None:
                stream.tail.refresh()  # its dirs, to watch before the pass reads them
        if self.plain is not None:
            for stream in self.streams.values():  # (the others' dirs: from their last pass)
                stream.tail.refresh()
        if watch is not None:
            watch.watch_only(self._tree_dirs(), self.levels)

    def owners(self, dirs: Iterable[Path]) -> set[Path]:
        """The manifests dirs (stream keys) that ``dirs`` of their trees lie in."""
        out: set[Path] = set()
        for d in dirs:
            for candidate in (d, *d.parents):
                if candidate in self.streams:
                    out.add(candidate)
                    break
        return out

    def _levels(self) -> set[Path]:
        out: set[Path] = set()
        for source in self.sources:
            out.update(source.manifests.levels())
            out.add(source.manifests.approach()[0])
        return out

    def _tree_dirs(self) -> list[Path]:
        return [d for s in self.streams.values() for d in s.tail.dirs]

    def _refused(self, path: Path, why: str) -> None:
        if path not in self._told:
            self._told.add(path)
            self.log.warning("manifests_dir_skipped", path=str(path), reason=why)

    def _open(self, path: Path, routes: list[tuple[Source, dict[str, str]]]) -> Stream | None:
        assert self.state_dir is not None
        log = self.log.bind(source=",".join(sorted(s.name for s, _ in routes)), manifests=str(path))
        try:
            real = os.path.realpath(path)
            for target, samples in self.targets.items():
                if _nested(real, samples):
                    raise TargetRefused(
                        f"manifests dir {path} and the samples dir {target.samples} are the same "
                        "directory or one inside the other"
                    )
            stream = Stream(
                path,
                routes,
                self.state_dir / checkpoint_name(path),
                key=str(path),
                fixed=None,
                log=log,
                grace_s=self.grace_s,
            )
        except (checkpoint.CheckpointError, StreamError, OSError) as exc:
            self.fail(path, exc, log, ",".join(sorted(s.name for s, _ in routes)))
            return None
        self.streams[path] = stream
        self.recovered(path, log)
        log.info(
            "manifests_found", checkpoint=str(stream.ckpt_path), retired_through=stream.saved.retired_through
        )
        return stream

    # ------------------------------------------------------------- targets

    def sampler(self, stream: Stream, target: Target) -> Sampler:
        """The stream's sampler for ``target``, made (and checked, and its samples root made) at first use."""
        sampler = stream.samplers.get(target)
        if sampler is not None:
            return sampler
        if self.plain is None:
            self._check(target)
        target.samples.mkdir(parents=True, exist_ok=True)
        log = stream.log.bind(samples=str(target.samples)) if self.plain is None else stream.log
        sampler = stream.samplers[target] = Sampler(target.warehouse, target.samples, self.limits, log=log)
        self.targets.setdefault(target, os.path.realpath(target.samples))
        return sampler

    def _check(self, target: Target) -> None:
        if target in self.targets:
            return
        real = os.path.realpath(target.samples)
        others: Iterable[tuple[str, Path, str]] = [
            ("its warehouse", target.warehouse, os.path.realpath(target.warehouse)),
            *(("the manifests dir", s.manifests, s.real) for s in self.streams.values()),
            *(
                ("the samples dir of another warehouse", t.samples, r)
                for t, r in self.targets.items()
                if t.warehouse != target.warehouse
            ),
        ]
        for what, path, resolved in others:
            if _nested(real, resolved):
                raise TargetRefused(
                    f"samples dir {target.samples} and {what} {path} are the same directory "
                    "or one inside the other"
                )

    # ------------------------------------------------------------- failures

    def fail(self, path: Path, exc: BaseException, log: Any, label: str) -> None:
        """Note a stream's failure (logged and counted once until it recovers); its samplers are closed."""
        stream = self.streams.get(path)
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass  # the failure being reported already says what is wrong with that disk
        message = str(exc)
        if self.failed.get(path) != message:
            log.error("stream_failed", error=message, error_type=type(exc).__name__)
            self.on_failure(label)
        self.failed[path] = message

    def recovered(self, path: Path, log: Any) -> None:
        if self.failed.pop(path, None) is not None:
            log.info("stream_recovered")

    def close(self) -> None:
        error: OSError | None = None
        for stream in self.streams.values():
            try:
                stream.close()
            except OSError as exc:
                error = error or exc
        if error is not None:
            raise error
