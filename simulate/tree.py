"""Traffic into a tree of sources, written the way real upstreams write it.

``tree(root, ...)`` writes files under ``{root}/{vendor}/{dataset}/{version}/raw/env{k}/``
and returns a ``TreeReport``: every final path relative to ``root`` with its
sha256, the dataset dirs (``{vendor}/{dataset}``), the seconds.

Three writers, mixed by weight: ``temp`` writes ``temp_NAME`` in chunks and
renames it to ``NAME`` when complete (seed 000), ``slow`` writes ``NAME`` in
chunks and keeps it open until complete (a slow scp), ``direct`` writes
``NAME`` in one write. Up to ``parallel`` files are open at once, one chunk
each per round and ``interval`` s between rounds: partial files are visible
for a while, as with uploads running side by side. ``new_dirs`` datasets (the
whole ``vendor/dataset/version/raw/env0`` chain, one mkdir per level) are made
while the traffic runs, just before their first file; ``duplicates`` files
are also written byte for byte into another dataset; ``rate`` caps the files
started per second. The same ``seed`` and options give the same paths and bytes.

Nothing is written outside ``root``: an empty root or one that is not a
directory is refused, the directories below it are made one component at a
time and a symlink or non-directory among them is refused, files are created
``O_EXCL | O_NOFOLLOW``, and a planned name that exists is refused
(``TreeError``) before anything is written. Beside a running daemon: nothing
is read back (the sha256 is of the bytes written), and a ``temp_`` file that
vanishes before its rename (a reader took an incomplete file) is reported in
``vanished``, not raised. Memory: ``parallel`` files' bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from simulate.traffic import content

TEMP_PREFIX = "temp_"


class TreeError(ValueError):
    """A run refused before anything was written; the message is one line."""


class Writer(StrEnum):
    TEMP = "temp"  # temp_NAME written in chunks, renamed to NAME when complete
    SLOW = "slow"  # NAME written in chunks, open until complete
    DIRECT = "direct"  # NAME written in one write, then closed


def parse_mix(text: str) -> dict[Writer, int]:
    """``temp=2,slow=1,direct=1`` → weights (a writer not named weighs 0); ValueError if unusable."""
    mix = dict.fromkeys(Writer, 0)
    for item in (i.strip() for i in text.split(",")):
        name, _, weight = item.partition("=")
        if name not in {w.value for w in Writer} or not (weight.isascii() and weight.isdigit()):
            raise ValueError(f"{item!r} is not WRITER=WEIGHT (writers temp, slow, direct; weights >= 0)")
        mix[Writer(name)] = int(weight)
    if not any(mix.values()):
        raise ValueError(f"{text!r}: at least one writer needs a weight > 0")
    return mix


@dataclass(frozen=True, slots=True)
class TreeFile:
    """One file: its final path relative to root, its content, how it was written."""

    path: str
    sha256: str
    size: int
    writer: Writer

    def summary(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "writer": str(self.writer)}


@dataclass(frozen=True, slots=True)
class TreeReport:
    root: Path
    seed: int
    seconds: float
    written: tuple[TreeFile, ...]  # at their final names, sorted by path
    vanished: tuple[TreeFile, ...]  # temp_ files gone before their rename
    dataset_dirs: tuple[str, ...]  # vendor/dataset, sorted
    new_dataset_dirs: tuple[str, ...]  # those made while the traffic ran
    duplicates: int

    @property
    def files(self) -> int:
        return len(self.written)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.written)

    def writers(self) -> dict[str, int]:
        return {str(w): sum(f.writer is w for f in self.written) for w in Writer}

    def summary(self) -> dict[str, object]:
        """The counts (``listing()`` adds the lists)."""
        return {
            "what": "tree",
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "datasets": len(self.dataset_dirs),
            "new_datasets": len(self.new_dataset_dirs),
            "root": str(self.root),
            "seed": self.seed,
            "writers": self.writers(),
            "duplicates": self.duplicates,
            "distinct_contents": len({f.sha256 for f in self.written}),
        }

    def listing(self) -> dict[str, object]:
        return {
            **self.summary(),
            "dataset_dirs": list(self.dataset_dirs),
            "new_dataset_dirs": list(self.new_dataset_dirs),
            "written": [f.summary() for f in self.written],
            "vanished": [f.summary() for f in self.vanished],
        }


@dataclass(frozen=True, slots=True)
class _Plan:
    rel: str  # final path relative to root
    dataset: str
    writer: Writer
    size: int
    tag: str  # content() tag and seed: a duplicate has its original's
    content_seed: int


def tree(
    root: Path | str,
    *,
    vendors: int = 2,
    datasets: int = 2,
    versions: int = 1,
    envs: int = 2,
    files: int = 5,
    total: int | None = None,
    size: int = 4096,
    mix: dict[Writer, int] | None = None,
    chunk: int = 1024,
    interval: float = 0.01,
    parallel: int = 4,
    new_dirs: int = 0,
    rate: float | None = None,
    seed: int | None = None,
    duplicates: int = 0,
    sleep: Callable[[float], None] = time.sleep,
) -> TreeReport:
    """Write the tree's files (``files`` per env dir, or ``total`` spread over them); see the module."""
    started = time.monotonic()
    counts = (vendors, datasets, versions, envs, files, total or 1, size, chunk, parallel)
    if min(counts) < 1 or min(new_dirs, duplicates) < 0:
        raise TreeError("counts and sizes must be >= 1 (new_dirs and duplicates >= 0)")
    mix = {w: mix.get(w, 0) for w in Writer} if mix else dict.fromkeys(Writer, 1)
    if min(mix.values()) < 0 or not any(mix.values()):
        raise TreeError(f"writer weights {mix}: >= 0, one at least > 0")
    if rate is not None and rate <= 0:
        raise TreeError(f"rate {rate}: files per second must be > 0")
    if total is not None and total < new_dirs:
        raise TreeError(f"total {total} < new dirs {new_dirs}: each new dir is made by its first file")
    if duplicates and vendors * datasets + new_dirs < 2:
        raise TreeError("duplicates need two datasets: more vendors, datasets or new dirs")
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 32)  # in the names: two runs do not collide
    top = _check_root(root)
    rng = random.Random(seed)
    old = [f"vendor{v:02d}/dataset{d:02d}" for v in range(vendors) for d in range(datasets)]
    new = [f"late{k:02d}-{seed}/dataset00" for k in range(new_dirs)]
    env_dirs = [
        (ds, f"{ds}/{r + 1}.0/raw/env{e}") for ds in old for r in range(versions) for e in range(envs)
    ]
    env_dirs += [(ds, f"{ds}/1.0/raw/env0") for ds in new]
    per_dir = [files] * len(env_dirs) if total is None else [0] * len(env_dirs)
    for i in range(total or 0):  # the new dirs first: each is made by its first file
        per_dir[(i - new_dirs) % len(env_dirs)] += 1
    slots = [(ds, d) for (ds, d), n in zip(env_dirs, per_dir, strict=True) for _ in range(n)]
    writers = _apportion(mix, len(slots) + duplicates, rng)
    plans = [
        _Plan(f"{d}/{name}", ds, writers[i], size, f"{d}/{name}", rng.getrandbits(64))
        for i, (ds, d) in enumerate(slots)
        for name in [f"part-{seed}-{i:05d}.dat"]
    ]
    olds = set(old)
    order = [p for p in plans if p.dataset in olds]
    rng.shuffle(order)
    for k, ds in enumerate(new):  # each new dataset's files in a block, spread over the run
        at = max(1, len(order) * (k + 1) // (new_dirs + 1))
        order[at:at] = [p for p in plans if p.dataset == ds]
    all_ds = old + new
    duplicates = min(duplicates, len(plans))
    for j, orig in enumerate(rng.sample(plans, duplicates)):
        ds = rng.choice([d for d in all_ds if d != orig.dataset])
        d = rng.choice([d for dds, d in env_dirs if dds == ds])
        name = "dup-" + orig.rel.rsplit("/", 1)[1]
        dup = _Plan(f"{d}/{name}", ds, writers[len(slots) + j], size, orig.tag, orig.content_seed)
        order.insert(rng.randrange(1, len(order) + 1), dup)
    _preflight(top, env_dirs, order, new)
    try:
        top.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TreeError(f"cannot make root {top}: {exc.strerror}") from None
    made = {d for ds, d in env_dirs if ds in olds}
    for d in sorted(made):
        _makedirs(top, d)
    written, vanished = _run(top, order, made, chunk, interval, parallel, rate, sleep)
    return TreeReport(
        root=top,
        seed=seed,
        seconds=time.monotonic() - started,
        written=tuple(sorted(written, key=lambda f: f.path)),
        vanished=tuple(sorted(vanished, key=lambda f: f.path)),
        dataset_dirs=tuple(sorted(all_ds)),
        new_dataset_dirs=tuple(new),
        duplicates=duplicates,
    )


def _check_root(root: Path | str) -> Path:
    if not str(root).strip():
        raise TreeError("the root is empty: give a directory to write the tree into")
    top = Path(root).absolute()
    if top.exists() and not top.is_dir():
        raise TreeError(f"root {top} is not a directory")
    return top


def _apportion(mix: dict[Writer, int], n: int, rng: random.Random) -> list[Writer]:
    """``n`` writers in proportion to the weights (largest remainder), shuffled."""
    weight = sum(mix.values())
    share = {w: n * mix[w] // weight for w in Writer}
    rest = sorted(Writer, key=lambda w: -(n * mix[w] % weight))
    for w in rest[: n - sum(share.values())]:
        share[w] += 1
    out = [w for w in Writer for _ in range(share[w])]
    rng.shuffle(out)
    return out


def _preflight(top: Path, env_dirs: list[tuple[str, str]], order: list[_Plan], new: list[str]) -> None:
    """Refuse before writing: a symlink or non-directory on the way, a new dataset or a name that exists."""
    for ds in new:
        if os.path.lexists(top / ds.split("/")[0]):
            raise TreeError(f"{top / ds.split('/')[0]} exists: new dirs are made by the run (another seed?)")
    for _, d in env_dirs:
        _makedirs(top, d, make=False)
    for p in order:
        final = top / p.rel
        for path in (final, final.with_name(TEMP_PREFIX + final.name)):
            if os.path.lexists(path):
                raise TreeError(f"{path} exists: a run with the same seed wrote it (another seed?)")


def _makedirs(top: Path, rel: str, make: bool = True) -> None:
    """Make ``top/rel`` one component at a time; a symlink or non-directory on the way is refused."""
    path = top
    for part in rel.split("/"):
        path = path / part
        if make:
            try:
                os.mkdir(path)
            except FileExistsError:
                pass  # made by an earlier run: checked below like any other
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            if make:
                raise
            return  # to be made (or refused with the root)
        if not stat.S_ISDIR(st.st_mode):
            raise TreeError(f"{path} is not a directory (a symlink?): refusing to write outside {top}")


def _run(
    top: Path,
    order: list[_Plan],
    made: set[str],
    chunk: int,
    interval: float,
    parallel: int,
    rate: float | None,
    sleep: Callable[[float], None],
) -> tuple[list[TreeFile], list[TreeFile]]:
    """Start the files in order (at most ``rate``/s), ``parallel`` open, one chunk each per round."""
    written: list[TreeFile] = []
    vanished: list[TreeFile] = []
    queue = deque(order)
    active: list[tuple[TreeFile, Generator[None, None, bool]]] = []
    t0 = time.monotonic()
    begun = 0
    try:
        while queue or active:
            while (
                queue and len(active) < parallel and (rate is None or time.monotonic() >= t0 + begun / rate)
            ):
                p = queue.popleft()
                d = p.rel.rsplit("/", 1)[0]
                if d not in made:  # a new dataset: its chain made now, while the others are written
                    _makedirs(top, d)
                    made.add(d)
                data = content(p.tag, p.size, p.content_seed)
                tf = TreeFile(p.rel, hashlib.sha256(data).hexdigest(), p.size, p.writer)
                active.append((tf, _write(top / p.rel, p.writer, data, chunk)))
                begun += 1
            if not active:  # held back by the rate
                sleep(max(0.0, t0 + begun / (rate or 1.0) - time.monotonic()))
                continue
            for item in list(active):
                try:
                    next(item[1])
                except StopIteration as done:
                    active.remove(item)
                    (written if done.value else vanished).append(item[0])
            if active and interval:
                sleep(interval)
    finally:
        for _, gen in active:
            gen.close()  # closes the file of a run stopped by an error
    return written, vanished


def _write(final: Path, writer: Writer, data: bytes, chunk: int) -> Generator[None, None, bool]:
    """One file as its writer writes it; yields between chunks. False: the temp_ file vanished."""
    path = final.with_name(TEMP_PREFIX + final.name) if writer is Writer.TEMP else final
    step = len(data) if writer is Writer.DIRECT else chunk
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        for off in range(0, len(data), step):
            if off:
                yield  # the other open files get their chunk, then the pause
            view = memoryview(data)[off : off + step]
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    if writer is Writer.TEMP:
        try:
            os.rename(path, final)
        except FileNotFoundError:  # taken before it was complete: the reader's bug, reported
            return False
    return True
